//! Percentiles in bounded memory: a DDSketch (Masson, Rim and Lee, VLDB 2019) with 1%
//! relative accuracy. A value `v > 0` falls in bucket `ceil(log_γ v)` with
//! `γ = (1 + α) / (1 − α)`; every value of a bucket is within `α` of the bucket's
//! representative, so any quantile is returned within 1% of a value of the right rank.
//! At most [`MAX_BUCKETS`] buckets per sign are kept: past that the buckets nearest zero
//! are merged, which only makes the lowest quantiles coarser.

use std::collections::BTreeMap;

/// Relative accuracy.
pub const ALPHA: f64 = 0.01;
const MAX_BUCKETS: usize = 2048;
/// Magnitudes below this count as zero.
const ZERO: f64 = 1e-12;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

fn index(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

fn representative(index: i32) -> f64 {
    2.0 * gamma().powi(index) / (gamma() + 1.0)
}

impl Sketch {
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if value.abs() < ZERO {
            self.zeros += 1;
            return;
        }
        let store = if value > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        *store.entry(index(value.abs())).or_default() += 1;
        if store.len() > MAX_BUCKETS {
            collapse_lowest(store);
        }
    }

    pub fn count(&self) -> u64 {
        self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>() + self.zeros
    }

    /// The value at quantile `q` (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (count - 1) as f64).round() as u64;
        let mut seen = 0;
        // Ascending values: the most negative first, then zeros, then positives.
        for (&index, &n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                return Some(-representative(index));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (&index, &n) in &self.positive {
            seen += n;
            if seen > rank {
                return Some(representative(index));
            }
        }
        None
    }
}

impl Sketch {
    /// Append the sketch to `out`: zeros, then each sign's (index, count) pairs.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.zeros.to_le_bytes());
        for store in [&self.positive, &self.negative] {
            out.extend_from_slice(&(store.len() as u32).to_le_bytes());
            for (index, count) in store {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
    }

    /// Read a sketch written by [`Sketch::encode`] from the front of `bytes`.
    pub fn decode(bytes: &mut &[u8]) -> Option<Sketch> {
        let mut sketch = Sketch {
            zeros: take_u64(bytes)?,
            ..Sketch::default()
        };
        for sign in 0..2 {
            let entries = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
            for _ in 0..entries {
                let index = i32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
                let count = take_u64(bytes)?;
                let store = if sign == 0 {
                    &mut sketch.positive
                } else {
                    &mut sketch.negative
                };
                store.insert(index, count);
            }
        }
        Some(sketch)
    }
}

pub fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

pub fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
}

/// Merge the two buckets nearest zero.
fn collapse_lowest(store: &mut BTreeMap<i32, u64>) {
    if let Some((_, n)) = store.pop_first()
        && let Some(mut next) = store.first_entry()
    {
        *next.get_mut() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        let mut sketch = Sketch::default();
        let values: Vec<f64> = (1..=10_000).map(|n| n as f64 * 0.37).collect();
        values.iter().for_each(|v| sketch.add(*v));
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = values[(q * (values.len() - 1) as f64).round() as usize];
            let estimate = sketch.quantile(q).unwrap();
            assert!(
                (estimate - exact).abs() <= ALPHA * exact + 1e-9,
                "q{q}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn negatives_zeros_and_positives_keep_their_order() {
        let mut sketch = Sketch::default();
        for v in [-50.0, -2.0, 0.0, 0.0, 3.0, 700.0] {
            sketch.add(v);
        }
        assert!((sketch.quantile(0.0).unwrap() + 50.0).abs() <= 0.5);
        assert_eq!(sketch.quantile(0.5), Some(0.0));
        assert!((sketch.quantile(1.0).unwrap() - 700.0).abs() <= 7.0);
        assert_eq!(Sketch::default().quantile(0.5), None);
    }

    #[test]
    fn memory_is_bounded_whatever_the_spread() {
        let mut sketch = Sketch::default();
        for exponent in -300..300 {
            for step in 0..20 {
                sketch.add(10f64.powi(exponent) * (1.0 + step as f64 * 0.05));
            }
        }
        assert!(sketch.positive.len() <= MAX_BUCKETS);
        assert_eq!(sketch.count(), 600 * 20);
        let top = sketch.quantile(1.0).unwrap();
        assert!((top / 1.95e299 - 1.0).abs() <= ALPHA, "{top}");
    }
}
