//! Which stored Kafka objects a newly stored one makes redundant, and deleting them.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::layout::{self, Assignment, KafkaObject};

/// Where a Kafka object sits among the others of its topic-partition: its directory,
/// the assignment that read it and its offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaPlace {
    pub dir: Path,
    pub topic: String,
    pub partition: i32,
    pub assignment: Assignment,
    pub first: i64,
    pub last: i64,
}

impl KafkaPlace {
    /// Objects of one directory, topic-partition and assignment.
    pub fn same_stream(&self, other: &KafkaPlace) -> bool {
        (&self.dir, &self.topic, self.partition, self.assignment)
            == (&other.dir, &other.topic, other.partition, other.assignment)
    }
}

/// Delete the objects that the object at `place`, now stored, makes redundant: those of
/// its topic-partition in its directory read by an earlier assignment
/// ([`Assignment`]'s order) whose offsets lie inside what its own assignment has stored
/// there without a gap ([`covered_runs`]). An assignment reads its offsets in order and
/// skips none, so those objects' events are all in its stored objects.
///
/// A replay after a crash rolls at other offsets than the objects stored before it,
/// whose offsets were never committed: they go once the replay has stored what they
/// hold. An owner whose partition was revoked and that uploads late deletes nothing of
/// a later owner's (they sort after it) nor overwrites it (names hold the assignment).
/// Before the deletes, events are stored twice, so the object's events are acknowledged
/// only after them.
pub async fn delete_covered(
    store: &Arc<dyn ObjectStore>,
    place: &KafkaPlace,
    unstored: &[KafkaPlace],
) -> object_store::Result<()> {
    let listed = store.list_with_delimiter(Some(&place.dir)).await?;
    let objects: Vec<(Path, KafkaObject)> = listed
        .objects
        .into_iter()
        .filter_map(|meta| {
            let object =
                layout::kafka_object(meta.location.filename()?, &place.topic, place.partition)?;
            Some((meta.location, object))
        })
        .collect();
    let runs = covered_runs(place, objects.iter().map(|(_, object)| object), unstored);
    for (location, object) in &objects {
        let redundant = object.assignment < place.assignment
            && runs
                .iter()
                .any(|(first, last)| *first <= object.first && object.last <= *last);
        if redundant {
            tracing::info!(path = %location, "deleting an object a later assignment stored again");
            match store.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

/// The offset ranges `place`'s assignment has stored in its directory without a gap:
/// its `listed` objects and `place` itself, in offset order, joined unless one of its
/// objects not stored yet (`unstored`) lies between. Offsets between two joined
/// objects that are in neither went to other directories (or were filtered out).
fn covered_runs<'a>(
    place: &KafkaPlace,
    listed: impl Iterator<Item = &'a KafkaObject>,
    unstored: &[KafkaPlace],
) -> Vec<(i64, i64)> {
    let mut own: Vec<(i64, i64)> = listed
        .filter(|object| object.assignment == place.assignment)
        .map(|object| (object.first, object.last))
        .chain([(place.first, place.last)])
        .collect();
    own.sort_unstable();
    own.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for (first, last) in own {
        match runs.last_mut() {
            Some(run)
                if !unstored
                    .iter()
                    .any(|gap| gap.first > run.1 && gap.first < first) =>
            {
                run.1 = run.1.max(last);
            }
            _ => runs.push((first, last)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(first: i64, last: i64) -> KafkaPlace {
        KafkaPlace {
            dir: Path::from("dt=2026-11-29"),
            topic: "sensors".into(),
            partition: 0,
            assignment: Assignment::parse("100-2000-0000000b").unwrap(),
            first,
            last,
        }
    }

    fn listed(first: i64, last: i64, assignment: &str) -> KafkaObject {
        KafkaObject {
            first,
            last,
            assignment: Assignment::parse(assignment).unwrap(),
        }
    }

    #[test]
    fn an_assignment_covers_what_it_stored_without_a_gap() {
        let own = "100-2000-0000000b";
        let objects = [
            listed(100, 103, own),
            listed(108, 111, own),
            listed(112, 115, own),
            listed(100, 120, "100-1000-0000000a"),
        ];
        // 104..=107 went to other directories: 100..=115 is covered.
        assert_eq!(
            covered_runs(&place(112, 115), objects.iter(), &[]),
            [(100, 115)]
        );
        // 104..=107 is an object of its own not stored yet: a gap.
        let gap = [place(104, 107)];
        assert_eq!(
            covered_runs(&place(112, 115), objects.iter(), &gap),
            [(100, 103), (108, 115)]
        );
        // The object just stored counts before the listing shows it.
        assert_eq!(covered_runs(&place(116, 118), [].iter(), &[]), [(116, 118)]);
    }
}
