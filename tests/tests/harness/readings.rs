//! Accounting for simulated sensors' readings (`sensor-sim`: each device counts `seq`
//! from 1): which arrived, which are missing, which came twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Per device, the seqs of the JSON-lines events under `dir`, in arrival order.
pub fn arrivals(dir: &Path) -> HashMap<String, Vec<u64>> {
    let mut by_device: HashMap<String, Vec<u64>> = HashMap::new();
    for value in super::read_lines(dir) {
        let device = value["device_id"].as_str().unwrap().to_owned();
        by_device
            .entry(device)
            .or_default()
            .push(value["seq"].as_u64().unwrap());
    }
    by_device
}

/// What arrived, accounted for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Seqs below each device's highest that never arrived.
    pub missing: u64,
    /// Copies past the first.
    pub duplicates: u64,
    /// Whether each device's first arrivals came in seq order.
    pub in_order: bool,
}

pub fn audit(arrived: &HashMap<String, Vec<u64>>) -> Audit {
    let mut audit = Audit {
        in_order: true,
        ..Audit::default()
    };
    for seqs in arrived.values() {
        let mut seen = HashSet::new();
        let mut last_first = None;
        for &seq in seqs {
            if seen.insert(seq) {
                audit.in_order &= last_first.is_none_or(|last| seq > last);
                last_first = Some(seq);
            } else {
                audit.duplicates += 1;
            }
        }
        let max = seqs.iter().copied().max().unwrap_or(0);
        audit.missing += (1..=max).filter(|seq| !seen.contains(seq)).count() as u64;
    }
    audit
}

/// The highest seq of each device.
pub fn highest(arrived: &HashMap<String, Vec<u64>>) -> HashMap<String, u64> {
    arrived
        .iter()
        .map(|(device, seqs)| (device.clone(), seqs.iter().copied().max().unwrap_or(0)))
        .collect()
}
