//! Every [`Event`] as a `tracing` event (feature `tracing`); no subscriber is installed.
//!
//! The target is `master_proto_supervisor`; the message is the event's
//! one-line form ([`Event`]'s `Display`), with its name and service as
//! fields. Levels: `error` for a failure of the supervisor's own calls
//! (channels, signals, reaps), `warn` for what an operator should see
//! (spawn failures, throttles, the process limit, crash loops, malformed
//! input, gossip), `info` for the life of children and of the supervisor,
//! `debug` for each accepted status update.
//!
//! # See also
//!
//! Postfix's `msg_warn`/`msg_info` in `src/master/`.

use master_proto::master::Outcome;

use crate::Event;

/// Emits `event` at its level.
pub(crate) fn emit(event: &Event) {
    let name = event.name();
    let service = event.service().map(crate::ServiceId::index);
    macro_rules! at {
        ($level:ident) => {
            tracing::$level!(target: "master_proto_supervisor", event = name, service = ?service, "{event}")
        };
    }
    match event {
        Event::ChannelFailed { .. }
        | Event::ChildChannelFailed { .. }
        | Event::SignalFailed { .. }
        | Event::ReapFailed { .. }
        | Event::ReloadFailed { .. } => at!(error),
        Event::SpawnFailed { .. }
        | Event::Throttled { .. }
        | Event::LimitReached { .. }
        | Event::CrashLoop { .. }
        | Event::Malformed { .. }
        | Event::Killed { .. } => at!(warn),
        Event::Status { outcome: Outcome::Taken | Outcome::Avail | Outcome::Redundant, .. } => at!(debug),
        Event::Status { .. } => at!(warn),
        _ => at!(info),
    }
}
