//! Peers: other IPC crates measured beside the transports (feature `peers`).
