//! What the admin page shows of alerts: every alert stage's firing alerts, and the
//! newest resolved ones, process-wide (as the serving tables are).
//!
//! A stage of the host's pipeline publishes its board under its name while it runs; a
//! job's pipeline keeps its board to itself, so that a replay never shows as live
//! alerts. The firing alerts come from the stage's durable state, so they are right
//! after a restart; the resolved list lives in memory only, and a reload's new stage
//! takes it over from the old one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

/// Resolved alerts kept per stage, newest first.
const RESOLVED_KEPT: usize = 50;

/// One stage's alerts, as alert payloads.
#[derive(Debug, Default)]
pub struct Board {
    /// By key.
    firing: BTreeMap<String, Value>,
    resolved: VecDeque<Value>,
}

impl Board {
    /// `key` fires (or fires still) as `alert`; `None`: it does not.
    pub fn set_firing(&mut self, key: &str, alert: Option<Value>) {
        match alert {
            Some(alert) => self.firing.insert(key.to_owned(), alert),
            None => self.firing.remove(key),
        };
    }

    pub fn resolved(&mut self, alert: Value) {
        self.resolved.push_front(alert);
        self.resolved.truncate(RESOLVED_KEPT);
    }
}

type Boards = Mutex<BTreeMap<String, Arc<Mutex<Board>>>>;

fn boards() -> &'static Boards {
    static BOARDS: OnceLock<Boards> = OnceLock::new();
    BOARDS.get_or_init(Boards::default)
}

/// A stage's board while it runs: published under the stage's name, or private.
pub struct Published {
    stage: String,
    board: Arc<Mutex<Board>>,
    public: bool,
}

impl Published {
    /// The board of `stage`: published (`public`), taking over the resolved alerts of
    /// the board it replaces, or private.
    pub fn new(stage: &str, public: bool) -> Published {
        let board = Arc::new(Mutex::new(Board::default()));
        if public
            && let Some(previous) = boards()
                .lock()
                .unwrap()
                .insert(stage.to_owned(), board.clone())
        {
            board.lock().unwrap().resolved = std::mem::take(&mut previous.lock().unwrap().resolved);
        }
        Published {
            stage: stage.to_owned(),
            board,
            public,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap()
    }
}

impl Drop for Published {
    /// A stopped stage leaves the page, unless a newer one of its name replaced it.
    fn drop(&mut self) {
        if !self.public {
            return;
        }
        let mut boards = boards().lock().unwrap();
        if boards
            .get(&self.stage)
            .is_some_and(|board| Arc::ptr_eq(board, &self.board))
        {
            boards.remove(&self.stage);
        }
    }
}

/// Every published board: `{"firing": [...], "resolved": [...]}`, each alert with its
/// `stage`; firing ones oldest first, resolved ones newest first.
pub fn snapshot() -> Value {
    let boards = boards().lock().unwrap();
    let mut firing = Vec::new();
    let mut resolved = Vec::new();
    for (stage, board) in boards.iter() {
        let board = board.lock().unwrap();
        let with_stage = |alert: &Value| {
            let mut alert = alert.clone();
            alert["stage"] = json!(stage);
            alert
        };
        firing.extend(board.firing.values().map(with_stage));
        resolved.extend(board.resolved.iter().map(with_stage));
    }
    let at = |alert: &Value, field: &str| alert[field].as_str().unwrap_or_default().to_owned();
    // RFC 3339 in UTC to the millisecond sorts as text.
    firing.sort_by_key(|alert| at(alert, "starts_at"));
    resolved.sort_by_key(|alert| std::cmp::Reverse(at(alert, "ends_at")));
    resolved.truncate(RESOLVED_KEPT);
    json!({ "firing": firing, "resolved": resolved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_stage_keeps_its_resolved_alerts_and_a_stopped_one_leaves() {
        let stage = "board-test-stage";
        let shown = |field: &str| -> usize {
            snapshot()[field]
                .as_array()
                .unwrap()
                .iter()
                .filter(|alert| alert["stage"] == stage)
                .count()
        };
        let old = Published::new(stage, true);
        old.lock().set_firing("gw1", Some(json!({"key": "gw1", "starts_at": "x"})));
        old.lock().resolved(json!({"key": "gw2", "ends_at": "y"}));
        assert_eq!((shown("firing"), shown("resolved")), (1, 1));
        let private = Published::new(stage, false);
        private.lock().resolved(json!({"key": "gw3"}));
        drop(private);
        assert_eq!(shown("resolved"), 1, "a job's board is not shown");
        let new = Published::new(stage, true);
        assert_eq!((shown("firing"), shown("resolved")), (0, 1), "taken over");
        drop(old);
        assert_eq!(shown("resolved"), 1, "the old stage stopping leaves the new one");
        drop(new);
        assert_eq!(shown("resolved"), 0);
    }
}
