//! The master's bookkeeping (in progress).
