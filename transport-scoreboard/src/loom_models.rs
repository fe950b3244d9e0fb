//! Loom models of the slot and the per-slot sleep/wake handshake: every
//! interleaving (up to `LOOM_MAX_PREEMPTIONS` preemptions) of small cases.
