//! The `tracing` feature: every event handed to the caller is also a `tracing` event, under the caller's own subscriber (the library installs none).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use master_proto_supervisor::Supervisor;
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

/// Records the level and message of each event of the supervisor's target.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Level, String)>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "master_proto_supervisor"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push((*event.metadata().level(), message));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn every_event_is_also_a_tracing_event() {
    let recorder = Arc::new(Recorder::default());
    let mut handed = Vec::new();
    tracing::subscriber::with_default(Arc::clone(&recorder), || {
        let mut sup = Supervisor::new().unwrap();
        sup.shutdown();
        sup.poll_once(Some(Duration::ZERO), |e| handed.push(e.to_string())).unwrap();
        assert!(sup.is_done());
    });
    let traced = recorder.0.lock().unwrap().clone();
    assert_eq!(handed, ["shutdown-began grace=10 children=0", "shutdown-complete"]);
    assert_eq!(traced, handed.iter().map(|m| (Level::INFO, m.clone())).collect::<Vec<_>>());
}
