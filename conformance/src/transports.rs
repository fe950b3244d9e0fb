//! The transports built on this platform, written once.
//!
//! `with_transports!(callback)` expands to one call
//! `callback! { name => Type, name => Type, ... }` listing every transport
//! whose cargo feature is on and which exists on this platform, in a fixed
//! order. `name` is the transport's short name (an identifier, equal to
//! [`master_proto::Transport::NAME`]) and `Type` a path to a unit struct
//! implementing [`master_proto::Transport`] and `Default`.
//!
//! The features are resolved here, in this crate, by one hidden macro per
//! transport crate (a `cfg` written inside an exported macro would be
//! evaluated in the crate that expands it). Each hidden macro appends its
//! transports to the list and hands it to the next; the last one calls the
//! callback.
//!
//! # Adding a transport
//!
//! Add its crate as an optional dependency behind a feature in
//! `Cargo.toml`, re-export its types below, and append `name => Type,` in
//! that crate's hidden macro. The conformance suite, the bench and the demo
//! pick it up.
//!
//! ```
//! macro_rules! names {
//!     ($($name:ident => $ty:path,)*) => { [$(stringify!($name)),*] };
//! }
//! let names: &[&str] = &master_proto_conformance::with_transports!(names);
//! assert_eq!(names, master_proto_conformance::TRANSPORT_NAMES);
//! ```

#[cfg(feature = "pipe")]
pub use master_proto_pipe::{Duplex, Pipe};
#[cfg(all(feature = "unixsock", unix))]
pub use master_proto_unixsock::Dgram;
#[cfg(all(feature = "unixsock", any(target_os = "linux", target_os = "android")))]
pub use master_proto_unixsock::SeqPacket;

#[cfg(all(feature = "memfd", target_os = "linux"))]
pub use master_proto_memfd::Memfd;

/// Expands `callback! { name => Type, ... }` over every transport built
/// here. See the [module documentation](self).
#[macro_export]
macro_rules! with_transports {
    ($callback:ident) => {
        $crate::__transports_pipe! { $callback; }
    };
}

// Plain `#[cfg]` attributes, not `cfg_if!`: a `#[macro_export]` macro
// defined by another macro's expansion cannot be named by `$crate::` path.
#[cfg(feature = "pipe")]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_pipe {
    ($callback:ident; $($list:tt)*) => {
        $crate::__transports_unixsock! { $callback; $($list)*
            pipe => $crate::transports::Pipe,
            duplex => $crate::transports::Duplex,
        }
    };
}

#[cfg(not(feature = "pipe"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_pipe {
    ($callback:ident; $($list:tt)*) => { $crate::__transports_unixsock! { $callback; $($list)* } };
}

// `seqpacket` gathers its per-child channels with epoll: Linux and Android.
#[cfg(all(feature = "unixsock", any(target_os = "linux", target_os = "android")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($callback:ident; $($list:tt)*) => {
        $crate::__transports_memfd! { $callback; $($list)*
            dgram => $crate::transports::Dgram,
            seqpacket => $crate::transports::SeqPacket,
        }
    };
}

#[cfg(all(feature = "unixsock", unix, not(any(target_os = "linux", target_os = "android"))))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($callback:ident; $($list:tt)*) => {
        $crate::__transports_memfd! { $callback; $($list)*
            dgram => $crate::transports::Dgram,
        }
    };
}

#[cfg(not(all(feature = "unixsock", unix)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_unixsock {
    ($callback:ident; $($list:tt)*) => { $crate::__transports_memfd! { $callback; $($list)* } };
}

// memfd exists on Linux only.
#[cfg(all(feature = "memfd", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_memfd {
    ($callback:ident; $($list:tt)*) => {
        $callback! { $($list)*
            memfd => $crate::transports::Memfd,
        }
    };
}

#[cfg(not(all(feature = "memfd", target_os = "linux")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __transports_memfd {
    ($callback:ident; $($list:tt)*) => { $callback! { $($list)* } };
}

macro_rules! names {
    ($($name:ident => $ty:path,)*) => {
        /// The short names of the transports built here, in list order.
        pub const TRANSPORT_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}
with_transports!(names);

cfg_if::cfg_if! {
    if #[cfg(feature = "pipe")] {
        /// The transport a master uses when none is asked for: Postfix's own
        /// duplex pipe, which every platform has and real Postfix daemons
        /// speak.
        pub const DEFAULT_TRANSPORT: Option<&str> = Some("duplex");
    } else {
        /// The transport a master uses when none is asked for (none is
        /// built: enable a transport feature).
        pub const DEFAULT_TRANSPORT: Option<&str> = None;
    }
}

#[cfg(test)]
mod tests {
    use master_proto::Transport;

    macro_rules! check_names {
        ($($name:ident => $ty:path,)*) => {
            $(assert_eq!(<$ty as Transport>::NAME, stringify!($name));)*
            let all: &[&str] = &[$(stringify!($name)),*];
            assert_eq!(all, super::TRANSPORT_NAMES);
        };
    }

    #[test]
    fn short_names_are_the_transports_own() {
        with_transports!(check_names);
    }

    #[test]
    fn default_transport_is_built() {
        if let Some(name) = super::DEFAULT_TRANSPORT {
            assert!(super::TRANSPORT_NAMES.contains(&name), "{name} is not in {:?}", super::TRANSPORT_NAMES);
        }
    }
}
