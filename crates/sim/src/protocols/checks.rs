//! Validation helpers for workload tables: every message names its key.

/// Each value must be at least 1.
///
/// # Errors
/// The first key whose value is 0.
pub fn at_least_one(values: &[(&str, u64)]) -> Result<(), String> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(format!("`{key}` must be at least 1")),
        None => Ok(()),
    }
}

/// Each value must be a probability in `[0, 1]`.
///
/// # Errors
/// The first key out of range.
pub fn probabilities(values: &[(&str, f64)]) -> Result<(), String> {
    match values.iter().find(|(_, p)| !(0.0..=1.0).contains(p)) {
        Some((key, p)) => Err(format!("`{key}` must be between 0 and 1, not {p}")),
        None => Ok(()),
    }
}

/// Each value must be a range `[min, max]` with `min <= max`.
///
/// # Errors
/// The first key whose range is reversed.
pub fn ranges(values: &[(&str, [u64; 2])]) -> Result<(), String> {
    match values.iter().find(|(_, [lo, hi])| lo > hi) {
        Some((key, _)) => Err(format!("`{key}` must be [min, max] with min <= max")),
        None => Ok(()),
    }
}

/// `[min, max]` in milliseconds as microseconds.
pub fn us(r: [u64; 2]) -> (u64, u64) {
    (r[0].saturating_mul(1000), r[1].saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_key() {
        assert_eq!(
            at_least_one(&[("a", 1), ("b", 0)]),
            Err("`b` must be at least 1".into())
        );
        assert!(probabilities(&[("p", 1.5)]).unwrap_err().contains("`p`"));
        assert!(probabilities(&[("p", f64::NAN)]).is_err());
        assert!(ranges(&[("r", [3, 2])]).unwrap_err().contains("`r`"));
        assert!(ranges(&[("r", [2, 2])]).is_ok());
        assert_eq!(us([1, 2]), (1000, 2000));
    }
}
