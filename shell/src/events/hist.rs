//! Power-of-two histograms in the terminal (bpftrace's `hist()`).

use serde::Serialize;

/// One power-of-two bucket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub low: i128,
    pub high: i128,
    pub count: u64,
}

/// The power-of-two bucket key of a value: 0 for 0, `b` for
/// `[2^(b-1), 2^b)`, `-b` for the mirrored negative bucket.
pub fn bucket_key(v: i128) -> i32 {
    if v == 0 {
        0
    } else {
        let b = 128 - v.unsigned_abs().leading_zeros() as i32;
        if v < 0 { -b } else { b }
    }
}

fn bounds(k: i32) -> (i128, i128) {
    match k {
        0 => (0, 1),
        k if k > 0 => (1i128 << (k - 1), 1i128 << k),
        k => (-(1i128 << (-k)) + 1, -(1i128 << (-k - 1)) + 1),
    }
}

/// Buckets from counts per [`bucket_key`] (every bucket between the
/// lowest and highest one, empty ones included).
pub fn buckets_from(counts: &std::collections::BTreeMap<i32, u64>) -> Vec<Bucket> {
    let (Some(&lo), Some(&hi)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    (lo..=hi)
        .map(|k| {
            let (low, high) = bounds(k);
            Bucket {
                low,
                high,
                count: counts.get(&k).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Power-of-two buckets (bpftrace `hist()`): 0, [1,2), [2,4), ...;
/// negative values mirror.
pub fn histogram(values: &[i128]) -> Vec<Bucket> {
    let mut counts: std::collections::BTreeMap<i32, u64> = Default::default();
    for v in values {
        *counts.entry(bucket_key(*v)).or_default() += 1;
    }
    buckets_from(&counts)
}

/// The terminal picture of a histogram.
pub fn histogram_text(title: &str, buckets: &[Bucket]) -> String {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let mut s = format!("{title}\n");
    for b in buckets {
        let bar = "@".repeat(((b.count * 52).div_ceil(max)) as usize);
        let range = format!("[{}, {})", b.low, b.high);
        s.push_str(&format!("{range:<24} {:>8} |{bar:<52}|\n", b.count));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let b = histogram(&[0, 1, 3, 3, 100]);
        assert_eq!(
            b[0],
            Bucket {
                low: 0,
                high: 1,
                count: 1
            }
        );
        assert_eq!(
            b[1],
            Bucket {
                low: 1,
                high: 2,
                count: 1
            }
        );
        assert_eq!(
            b[2],
            Bucket {
                low: 2,
                high: 4,
                count: 2
            }
        );
        assert_eq!(
            b.last().unwrap(),
            &Bucket {
                low: 64,
                high: 128,
                count: 1
            }
        );
        let neg = histogram(&[-2, -2, 5]);
        assert_eq!(neg[0].count, 2);
        assert_eq!(neg[0].low, -3);
        assert!(histogram(&[]).is_empty());
    }
}
