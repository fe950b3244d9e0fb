//! The statistics both tasks compute, each one way: latency percentiles
//! (an hdrhistogram of nanoseconds with three significant digits) and the
//! median over repetitions.

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

/// The median of `values` (the mean of the middle two for an even count;
/// values that are not finite are left out).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { f64::midpoint(v[mid - 1], v[mid]) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }
}
