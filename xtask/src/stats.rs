//! Latency percentiles, the one way both tasks compute them: an
//! hdrhistogram of nanoseconds with three significant digits.

use std::io;

use hdrhistogram::Histogram;

/// A histogram of `samples` (nanoseconds; 0 is recorded as 1, anything
/// above an hour as an hour).
pub(crate) fn histogram(samples: &[u64]) -> io::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).map_err(io::Error::other)?;
    for &s in samples {
        h.saturating_record(s.max(1));
    }
    Ok(h)
}
