//! Every master-proto transport behind one type, chosen by cargo feature,
//! by name, or as the platform's best.
//!
//! An application that runs a prefork master picks its status channel
//! here: [`AnyTransport`] is one `Copy` value over every transport built
//! into the program, and implements [`master_proto::Transport`] itself, so
//! code generic over `T: Transport` (a master, the conformance suite, the
//! bench) serves a choice made at run time. Dispatch is an enum match, as
//! crossbeam-channel's flavours: no `dyn`, no allocation per update.
//!
//! ```no_run
//! use master_proto_transports::{AnyTransport, sink_from_env};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In the master: by name from the configuration, or the platform's best.
//! let t = AnyTransport::from_name("memfd")?; // Err names every transport built here
//! let t = AnyTransport::platform_default();
//! let postfix = AnyTransport::postfix(); // Postfix's own duplex pipe
//! for t in AnyTransport::all() {
//!     println!("{}: {:?}", t.name(), t.caps());
//! }
//! // In the child, after exec: whichever transport the master chose (a
//! // master that names none, such as a real Postfix master(8), means
//! // Postfix's duplex pipe).
//! let sink = sink_from_env(&mut master_proto::ChildEnv::from_process()?)?;
//! # Ok(()) }
//! ```
//!
//! # Features and platforms
//!
//! One cargo feature per transport crate, all on by default:
//!
//! | feature | transports | platforms |
//! |---|---|---|
//! | `pipe` | `pipe`, `duplex` | every Unix |
//! | `unixsock` | `dgram` (kernel-verified pids on Linux and Android), `seqpacket` | `dgram`: every Unix; `seqpacket`: Linux, Android |
//! | `memfd` | `memfd` | Linux |
//! | `scoreboard` | `scoreboard` (latest state: `notify` never blocks) | Linux |
//!
//! This crate's root is the one place outside the transport crates that
//! says which transports exist where; [`with_transports!`] hands that list
//! to code that instantiates something per type, such as the conformance
//! suite. Building with no transport at all on a platform is a compile
//! error.
//!
//! # Errors
//!
//! [`UnknownTransport`] for a name that is not built here (it lists those
//! that are); [`master_proto::EnvError::UnknownTransport`] from
//! [`sink_from_env`] in a child whose master chose one of those. A source
//! handed to the [`Transport`] methods of another transport than the one
//! that opened it is refused with an `InvalidInput` error.
//!
//! # See also
//!
//! The transport crates `master-proto-pipe`, `master-proto-unixsock`,
//! `master-proto-memfd`, `master-proto-scoreboard`; `master-proto-conformance`, the suite every one of
//! them passes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use master_proto::env::ChildEnv;
use master_proto::{
    Caps, EndFds, EnvError, NotifyError, Received, RecvError, Status, StatusSink, StatusSource, Transport,
};

/// The concrete transport types, re-exported under their own names.
pub mod flavours {
    #[cfg(feature = "pipe")]
    pub use master_proto_pipe::{Duplex, Pipe};
    #[cfg(all(feature = "unixsock", unix))]
    pub use master_proto_unixsock::Dgram;
    #[cfg(all(feature = "unixsock", any(target_os = "linux", target_os = "android")))]
    pub use master_proto_unixsock::SeqPacket;

    #[cfg(all(feature = "memfd", target_os = "linux"))]
    pub use master_proto_memfd::Memfd;

    #[cfg(all(feature = "scoreboard", target_os = "linux"))]
    pub use master_proto_scoreboard::Scoreboard;
}

/// Expands `callback! { name => Type, name => Type, ... }` listing every
/// transport built here, in a fixed order: `name` is the transport's short
/// name (an identifier, equal to its [`Transport::name`]) and `Type` a path
/// to its type (`Transport + Default + Copy`).
///
/// ```
/// macro_rules! names {
///     ($($name:ident => $ty:path,)*) => { [$(stringify!($name)),*] };
/// }
/// let names: &[&str] = &master_proto_transports::with_transports!(names);
/// assert_eq!(names, master_proto_transports::NAMES);
/// ```
#[macro_export]
macro_rules! with_transports {
    ($callback:ident) => {
        $crate::__transports_pipe! { (@pairs $callback) }
    };
}

// The list, written once. Each hidden macro appends the transports of one
// feature that exist on this platform and hands the list on; the last one
// calls the callback. Plain `#[cfg]` attributes, not `cfg_if!`: a
// `#[macro_export]` macro defined by another macro's expansion cannot be
// named by `$crate::` path, and a `cfg` written inside an exported macro
// would be evaluated in the crate that expands it. An entry is
// `[name Variant Type]`: the short name, the variant of the `Any*` enums,
// the type.

#[cfg(feature = "pipe")]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_pipe {
    ($how:tt $($list:tt)*) => {
        $crate::__transports_unixsock! { $how $($list)*
            [pipe Pipe $crate::flavours::Pipe]
            [duplex Duplex $crate::flavours::Duplex]
        }
    };
}

#[cfg(not(feature = "pipe"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_pipe {
    ($how:tt $($list:tt)*) => { $crate::__transports_unixsock! { $how $($list)* } };
}

// `seqpacket` gathers its per-child channels with epoll: Linux and Android.
#[cfg(all(feature = "unixsock", any(target_os = "linux", target_os = "android")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($how:tt $($list:tt)*) => {
        $crate::__transports_memfd! { $how $($list)*
            [dgram Dgram $crate::flavours::Dgram]
            [seqpacket SeqPacket $crate::flavours::SeqPacket]
        }
    };
}

#[cfg(all(feature = "unixsock", unix, not(any(target_os = "linux", target_os = "android"))))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($how:tt $($list:tt)*) => {
        $crate::__transports_memfd! { $how $($list)*
            [dgram Dgram $crate::flavours::Dgram]
        }
    };
}

#[cfg(not(all(feature = "unixsock", unix)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($how:tt $($list:tt)*) => { $crate::__transports_memfd! { $how $($list)* } };
}

// memfd exists on Linux only.
#[cfg(all(feature = "memfd", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_memfd {
    ($how:tt $($list:tt)*) => {
        $crate::__transports_scoreboard! { $how $($list)*
            [memfd Memfd $crate::flavours::Memfd]
        }
    };
}

#[cfg(not(all(feature = "memfd", target_os = "linux")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_memfd {
    ($how:tt $($list:tt)*) => { $crate::__transports_scoreboard! { $how $($list)* } };
}

// scoreboard exists on Linux only.
#[cfg(all(feature = "scoreboard", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_scoreboard {
    ($how:tt $($list:tt)*) => {
        $crate::__transports_end! { $how $($list)*
            [scoreboard Scoreboard $crate::flavours::Scoreboard]
        }
    };
}

#[cfg(not(all(feature = "scoreboard", target_os = "linux")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_scoreboard {
    ($how:tt $($list:tt)*) => { $crate::__transports_end! { $how $($list)* } };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __transports_end {
    ((@pairs $callback:ident) $([$name:ident $variant:ident $ty:path])*) => {
        $callback! { $($name => $ty,)* }
    };
    ((@full $callback:ident) $($list:tt)*) => {
        $callback! { $($list)* }
    };
}

macro_rules! any {
    ($([$name:ident $variant:ident $ty:path])+) => {
        /// The short names of the transports built here, in the order of
        /// [`AnyTransport::all`].
        pub const NAMES: &[&str] = &[$(stringify!($name)),+];

        /// One of the transports built here, chosen at run time.
        ///
        /// It implements [`Transport`] with [`AnySource`] and [`AnySink`];
        /// each call is one `match` on the variant.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum AnyTransport {
            $(
                #[doc = concat!("`", stringify!($name), "`: [`", stringify!($variant), "`](flavours::", stringify!($variant), ").")]
                $variant($ty),
            )+
        }

        /// The master's end of an [`AnyTransport`] channel.
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum AnySource {
            $(
                #[doc = concat!("A `", stringify!($name), "` channel.")]
                $variant(<$ty as Transport>::Source),
            )+
        }

        /// A child's end of an [`AnyTransport`] channel.
        #[derive(Debug)]
        #[non_exhaustive]
        // A tag of its own rather than a niche in one sink's fields: the
        // dispatch of `notify` is then a load of the tag and a jump table
        // (niche decoding cost a few dependent instructions more on every
        // notify, a measurable share of a 4 ns one).
        #[repr(u8)]
        pub enum AnySink {
            $(
                #[doc = concat!("A `", stringify!($name), "` sink.")]
                $variant(<$ty as Transport>::Sink),
            )+
        }

        impl AnyTransport {
            /// The short name ([`Transport::name`]), without the trait in
            /// scope.
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self {
                    $(AnyTransport::$variant(t) => t.name(),)+
                }
            }

            /// What it promises ([`Transport::caps`]), without the trait in
            /// scope.
            #[must_use]
            pub fn caps(&self) -> Caps {
                match self {
                    $(AnyTransport::$variant(t) => t.caps(),)+
                }
            }

            /// Every transport built on this platform with these features,
            /// in a fixed order (that of [`NAMES`]).
            pub fn all() -> impl ExactSizeIterator<Item = AnyTransport> + Clone {
                [$(AnyTransport::$variant(<$ty>::default())),+].into_iter()
            }

            /// The transport called `name`.
            ///
            /// # Errors
            ///
            /// [`UnknownTransport`], which names every transport built here.
            pub fn from_name(name: &str) -> Result<AnyTransport, UnknownTransport> {
                match name {
                    $(stringify!($name) => Ok(AnyTransport::$variant(<$ty>::default())),)+
                    _ => Err(UnknownTransport { name: name.to_owned() }),
                }
            }
        }

        impl Transport for AnyTransport {
            type Source = AnySource;
            type Sink = AnySink;

            fn name(&self) -> &'static str {
                AnyTransport::name(self)
            }

            fn caps(&self) -> Caps {
                AnyTransport::caps(self)
            }

            fn open(&self) -> io::Result<AnySource> {
                match self {
                    $(AnyTransport::$variant(t) => t.open().map(AnySource::$variant),)+
                }
            }

            #[allow(unreachable_patterns, reason = "with one transport built, every source is its own")]
            fn end_fds(&self, source: &mut AnySource, generation: u32) -> io::Result<EndFds> {
                match (self, source) {
                    $((AnyTransport::$variant(t), AnySource::$variant(s)) => t.end_fds(s, generation),)+
                    (t, s) => Err(mismatch(*t, s)),
                }
            }

            #[allow(unreachable_patterns, reason = "with one transport built, every source is its own")]
            fn register_child(&self, source: &mut AnySource, generation: u32, pid: i32) -> io::Result<()> {
                match (self, source) {
                    $((AnyTransport::$variant(t), AnySource::$variant(s)) => t.register_child(s, generation, pid),)+
                    (t, s) => Err(mismatch(*t, s)),
                }
            }

            #[allow(unreachable_patterns, reason = "with one transport built, every source is its own")]
            fn forget_child(&self, source: &mut AnySource, pid: i32) -> io::Result<()> {
                match (self, source) {
                    $((AnyTransport::$variant(t), AnySource::$variant(s)) => t.forget_child(s, pid),)+
                    (t, s) => Err(mismatch(*t, s)),
                }
            }

            fn open_sink(&self, env: &mut ChildEnv) -> Result<AnySink, EnvError> {
                match self {
                    $(AnyTransport::$variant(t) => t.open_sink(env).map(AnySink::$variant),)+
                }
            }
        }

        $(
            impl From<$ty> for AnyTransport {
                fn from(t: $ty) -> AnyTransport {
                    AnyTransport::$variant(t)
                }
            }
        )+

        impl AnySource {
            /// The short name of the transport that opened this channel.
            #[must_use]
            pub fn transport_name(&self) -> &'static str {
                match self {
                    $(AnySource::$variant(_) => stringify!($name),)+
                }
            }
        }

        impl AsFd for AnySource {
            fn as_fd(&self) -> BorrowedFd<'_> {
                match self {
                    $(AnySource::$variant(s) => s.as_fd(),)+
                }
            }
        }

        impl StatusSource for AnySource {
            #[inline]
            fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
                match self {
                    $(AnySource::$variant(s) => s.try_recv(),)+
                }
            }

            // Forwarded, not the trait's default: a transport's own drain
            // may batch (memfd's does).
            #[inline]
            fn drain(&mut self, f: impl FnMut(Received)) -> Result<usize, RecvError> {
                match self {
                    $(AnySource::$variant(s) => s.drain(f),)+
                }
            }

            #[inline]
            fn overwritten(&self) -> Option<u64> {
                match self {
                    $(AnySource::$variant(s) => s.overwritten(),)+
                }
            }
        }

        impl StatusSink for AnySink {
            #[inline]
            fn notify(&self, status: Status) -> Result<(), NotifyError> {
                match self {
                    $(AnySink::$variant(s) => s.notify(status),)+
                }
            }

            fn disconnect_fd(&self) -> BorrowedFd<'_> {
                match self {
                    $(AnySink::$variant(s) => s.disconnect_fd(),)+
                }
            }

            fn pid(&self) -> i32 {
                match self {
                    $(AnySink::$variant(s) => s.pid(),)+
                }
            }

            fn generation(&self) -> u32 {
                match self {
                    $(AnySink::$variant(s) => s.generation(),)+
                }
            }
        }
    };
    () => {
        compile_error!(
            "master-proto-transports: no transport is built on this platform with these features \
             (enable `pipe`, `unixsock`, `memfd` or `scoreboard`)"
        );
    };
}

__transports_pipe! { (@full any) }

impl AnyTransport {
    /// The best transport built here for a service of this project's own
    /// children:
    ///
    /// - Linux: `memfd`, when built. No system call per update while the
    ///   master is awake (about 100 times cheaper than a pipe write), a
    ///   private channel per child (the master knows who sent what,
    ///   whatever the child writes), every update delivered in order, and
    ///   a dead master seen without a system call.
    /// - Linux and Android without it: `seqpacket`, a private socket per
    ///   child: the same identity and isolation, one `send(2)` per update.
    /// - Other Unix: `dgram`, one shared datagram socket (the pid is
    ///   claimed, as in Postfix, where the kernel passes no credentials).
    /// - Otherwise `duplex`, or `pipe`.
    ///
    /// Children of a real Postfix master(8), and Postfix daemons run by
    /// this project's master, need [`AnyTransport::postfix`] instead.
    #[must_use]
    pub fn platform_default() -> AnyTransport {
        cfg_if::cfg_if! {
            if #[cfg(all(feature = "memfd", target_os = "linux"))] {
                AnyTransport::Memfd(flavours::Memfd)
            } else if #[cfg(all(feature = "unixsock", any(target_os = "linux", target_os = "android")))] {
                AnyTransport::SeqPacket(flavours::SeqPacket)
            } else if #[cfg(all(feature = "unixsock", unix))] {
                AnyTransport::Dgram(flavours::Dgram)
            } else if #[cfg(feature = "pipe")] {
                AnyTransport::Duplex(flavours::Duplex)
            } else {
                compile_error!("master-proto-transports: no transport is built on this platform")
            }
        }
    }

    /// Postfix's own status channel, the duplex pipe: byte-exact with a
    /// real Postfix master(8) and its daemons.
    #[cfg(feature = "pipe")]
    #[must_use]
    pub const fn postfix() -> AnyTransport {
        AnyTransport::Duplex(flavours::Duplex)
    }

    /// The transport built here that a master naming none means: the one
    /// that speaks Postfix's wire (a real Postfix master(8) sets no
    /// `MASTER_STATUS_TRANSPORT`), if built.
    #[must_use]
    pub fn unnamed() -> Option<AnyTransport> {
        AnyTransport::all().find(|t| t.caps().postfix_wire)
    }

    /// The transport a child's environment names: `MASTER_STATUS_TRANSPORT`,
    /// or, when the master named none, [`AnyTransport::unnamed`].
    ///
    /// # Errors
    ///
    /// [`EnvError::UnknownTransport`] when the named transport is not built
    /// here (or none is named and Postfix's is not built).
    pub fn from_env(env: &ChildEnv) -> Result<AnyTransport, EnvError> {
        match env.transport.as_deref() {
            Some(name) => AnyTransport::from_name(name).map_err(|e| EnvError::UnknownTransport(e.name)),
            None => AnyTransport::unnamed().ok_or_else(|| EnvError::UnknownTransport(String::new())),
        }
    }
}

impl std::fmt::Display for AnyTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AnyTransport {
    type Err = UnknownTransport;

    fn from_str(name: &str) -> Result<AnyTransport, UnknownTransport> {
        AnyTransport::from_name(name)
    }
}

/// Builds the sink of whichever transport the master chose, from the
/// child's standard environment ([`AnyTransport::from_env`], then
/// [`Transport::sink`]). One child binary thus runs under every transport
/// of this project's master and, on the duplex pipe, under a real Postfix
/// master(8).
///
/// # Errors
///
/// [`EnvError::UnknownTransport`] when the environment names a transport
/// not built here; otherwise as [`Transport::sink`].
pub fn sink_from_env(env: &mut ChildEnv) -> Result<AnySink, EnvError> {
    AnyTransport::from_env(env)?.sink(env)
}

/// A transport name that is not built here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {name:?}: built here are {}", NAMES.join(", "))]
pub struct UnknownTransport {
    /// The name asked for.
    pub name: String,
}

/// The error for a source handed to another transport than its own.
fn mismatch(t: AnyTransport, source: &AnySource) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a {} channel was handed to the {} transport", source.transport_name(), t.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! check_names {
        ($($name:ident => $ty:path,)*) => {
            $(assert_eq!(<$ty>::default().name(), stringify!($name));)*
            let all: &[&str] = &[$(stringify!($name)),*];
            assert_eq!(all, NAMES);
        };
    }

    #[test]
    fn short_names_are_the_transports_own() {
        with_transports!(check_names);
        let names: Vec<&str> = AnyTransport::all().map(|t| t.name()).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn every_name_round_trips() {
        for t in AnyTransport::all() {
            assert_eq!(AnyTransport::from_name(t.name()), Ok(t));
            assert_eq!(t.to_string().parse::<AnyTransport>(), Ok(t));
        }
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let e = AnyTransport::from_name("carrier-pigeon").expect_err("not a transport");
        assert_eq!(e.name, "carrier-pigeon");
        let text = e.to_string();
        for name in NAMES {
            assert!(text.contains(name), "{text:?} does not name {name}");
        }
    }

    #[test]
    fn platform_default_and_postfix_are_built() {
        assert!(NAMES.contains(&AnyTransport::platform_default().name()));
        #[cfg(feature = "pipe")]
        {
            assert_eq!(AnyTransport::postfix().name(), "duplex");
            assert!(AnyTransport::postfix().caps().postfix_wire);
            assert_eq!(AnyTransport::unnamed(), Some(AnyTransport::postfix()));
        }
    }

    #[test]
    fn a_source_of_another_transport_is_refused() {
        let mut all = AnyTransport::all();
        let (Some(a), Some(b)) = (all.next(), all.next()) else { return };
        let mut source = a.open().expect("open");
        let e = b.child_end(&mut source, 1).expect_err("mismatched source");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(a.name()) && e.to_string().contains(b.name()), "{e}");
        assert_eq!(b.register_child(&mut source, 1, 1).map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));
    }

    #[test]
    fn child_ends_are_stamped_with_their_transport() {
        for t in AnyTransport::all() {
            let mut source = t.open().expect("open");
            let end = t.child_end(&mut source, 1).expect("child end");
            assert_eq!(end.transport, t.name());
        }
    }
}
