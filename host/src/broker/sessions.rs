//! The broker's sessions: who subscribed to what, the queue each holds, and the
//! routing of published messages into those queues. Persistent sessions
//! (`clean_session = false`) are kept across restarts: their subscriptions in
//! `sessions.json`, their queues on disk under `sessions/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rumqttc::Publish;
use rumqttc::mqttbytes::{QoS, matches};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::queue::Queue;
use crate::buffer::{BufferError, Entry};

/// QoS 0 messages waiting for a connected client's socket before they are dropped.
const LIVE_CAPACITY: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a sessions file the broker wrote: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Queue(#[from] BufferError),
}

pub struct Session {
    pub client_id: String,
    pub persistent: bool,
    subscriptions: Mutex<BTreeMap<String, QoS>>,
    pub queue: Queue,
    /// QoS 0 messages for the connected client, if one is.
    live: Mutex<Option<mpsc::Sender<Publish>>>,
    /// The connection holding the session (a number counted up per attach) and what
    /// tells it to let go.
    owner: Mutex<(u64, CancellationToken)>,
}

impl Session {
    /// The QoS a message of `qos` on `topic` reaches this session with, if it does.
    fn wants(&self, topic: &str, qos: QoS) -> Option<QoS> {
        let subscriptions = self.subscriptions.lock().unwrap();
        subscriptions
            .iter()
            .filter(|(filter, _)| matches(topic, filter))
            .map(|(_, granted)| *granted)
            .max_by_key(|granted| *granted as u8)
            .map(|granted| lower(granted, qos))
    }
}

/// The lower of two QoS levels.
fn lower(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

/// A connection's hold on its session.
pub struct Attached {
    pub session: Arc<Session>,
    pub session_present: bool,
    /// Cancelled on a takeover or when the broker stops.
    pub owner: CancellationToken,
    /// This connection's number, for [`Sessions::detach`].
    pub generation: u64,
    /// QoS 0 messages for this connection.
    pub live: mpsc::Receiver<Publish>,
}

pub struct Sessions {
    dir: PathBuf,
    max_queue_bytes: u64,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<String, Arc<Session>>,
    /// The sessions with at least one subscription: those a message may be routed to.
    /// Most connected clients (devices) only publish, and a publish looks at these
    /// alone, so that its cost does not grow with every client connected.
    subscribers: HashMap<String, Arc<Session>>,
    /// The last retained message of each topic (kept in memory only).
    retained: BTreeMap<String, Publish>,
}

/// `sessions.json`: each persistent session's subscriptions (filter → QoS 0 or 1).
#[derive(Default, Serialize, Deserialize)]
struct Stored(BTreeMap<String, BTreeMap<String, u8>>);

impl Sessions {
    /// The sessions stored in `dir`, their queues opened.
    pub fn open(dir: &Path, max_queue_bytes: u64) -> Result<Sessions, SessionError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SessionError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("sessions")).map_err(io(dir))?;
        let file = dir.join("sessions.json");
        let stored = match std::fs::read(&file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| SessionError::Unreadable {
                    path: file.clone(),
                    source,
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(error) => return Err(io(&file)(error)),
        };
        let sessions = Sessions {
            dir: dir.to_owned(),
            max_queue_bytes,
            registry: Mutex::default(),
        };
        let mut registry = Registry::default();
        for (client_id, filters) in stored.0 {
            let session = sessions.persistent(&client_id)?;
            *session.subscriptions.lock().unwrap() = filters
                .into_iter()
                .map(|(filter, qos)| {
                    (
                        filter,
                        if qos == 0 {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        },
                    )
                })
                .collect();
            let session = Arc::new(session);
            registry.note_subscriptions(&session);
            registry.sessions.insert(client_id, session);
        }
        // A queue whose session never reached `sessions.json` (a crash in between) held
        // nothing anyone was promised.
        let queues = dir.join("sessions");
        for entry in std::fs::read_dir(&queues).map_err(io(&queues))?.flatten() {
            let known = hex::decode(entry.file_name().as_encoded_bytes())
                .ok()
                .and_then(|id| String::from_utf8(id).ok())
                .is_some_and(|id| registry.sessions.contains_key(&id));
            if !known {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        *sessions.registry.lock().unwrap() = registry;
        Ok(sessions)
    }

    fn queue_dir(&self, client_id: &str) -> PathBuf {
        self.dir.join("sessions").join(hex::encode(client_id))
    }

    fn persistent(&self, client_id: &str) -> Result<Session, SessionError> {
        let queue = Queue::durable(&self.queue_dir(client_id), self.max_queue_bytes)?;
        Ok(Session::new(client_id, true, queue))
    }

    /// Attach a new connection of `client_id` to its session: the stored one for a
    /// persistent connection that had one, else a new one. A connection holding the
    /// session already is told to let go.
    pub fn attach(
        &self,
        client_id: &str,
        clean_session: bool,
        stop: &CancellationToken,
    ) -> Result<Attached, SessionError> {
        let mut registry = self.registry.lock().unwrap();
        let previous = registry.sessions.get(client_id).cloned();
        if let Some(previous) = &previous {
            previous.owner.lock().unwrap().1.cancel();
        }
        let (session, session_present) = match previous {
            Some(previous) if previous.persistent && !clean_session => (previous, true),
            previous => {
                // The new session starts without the old one's subscriptions.
                registry.subscribers.remove(client_id);
                if previous.is_some_and(|p| p.persistent) {
                    registry.sessions.remove(client_id);
                    self.save(&registry)?;
                    let _ = std::fs::remove_dir_all(self.queue_dir(client_id));
                }
                let session = if clean_session {
                    Session::new(client_id, false, Queue::memory())
                } else {
                    self.persistent(client_id)?
                };
                let session = Arc::new(session);
                registry
                    .sessions
                    .insert(client_id.to_owned(), session.clone());
                if !clean_session {
                    self.save(&registry)?;
                }
                (session, false)
            }
        };
        let owner = stop.child_token();
        let generation = {
            let mut held = session.owner.lock().unwrap();
            *held = (held.0 + 1, owner.clone());
            held.0
        };
        let (sender, live) = mpsc::channel(LIVE_CAPACITY);
        *session.live.lock().unwrap() = Some(sender);
        Ok(Attached {
            session,
            session_present,
            owner,
            generation,
            live,
        })
    }

    /// Keep a persistent session for `client_id` subscribed (QoS 1) to `filters`, made
    /// now if there is none: a local pipeline's MQTT source is declared before the
    /// broker accepts anyone, so that nothing published before it first connects is
    /// lost. A clean session connected under that id is left alone.
    pub fn declare(&self, client_id: &str, filters: &[String]) -> Result<(), SessionError> {
        let mut registry = self.registry.lock().unwrap();
        let session = match registry.sessions.get(client_id) {
            Some(session) if !session.persistent => return Ok(()),
            Some(session) => session.clone(),
            None => {
                let session = Arc::new(self.persistent(client_id)?);
                registry
                    .sessions
                    .insert(client_id.to_owned(), session.clone());
                session
            }
        };
        let added = {
            let mut subscriptions = session.subscriptions.lock().unwrap();
            filters.iter().fold(false, |added, filter| {
                let before = subscriptions.insert(filter.clone(), QoS::AtLeastOnce);
                added | (before != Some(QoS::AtLeastOnce))
            })
        };
        registry.note_subscriptions(&session);
        if added {
            self.save(&registry)?;
        }
        Ok(())
    }

    /// The connection numbered `generation` has ended: a clean session ends with it.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) {
        let mut registry = self.registry.lock().unwrap();
        if session.owner.lock().unwrap().0 != generation {
            return; // taken over: the new connection holds it now
        }
        *session.live.lock().unwrap() = None;
        if !session.persistent
            && registry
                .sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            registry.sessions.remove(&session.client_id);
            registry.subscribers.remove(&session.client_id);
        }
    }

    /// Add subscriptions (QoS already granted); returns the retained messages they match.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filters: &[(String, QoS)],
    ) -> Result<Vec<Publish>, SessionError> {
        let mut registry = self.registry.lock().unwrap();
        {
            let mut subscriptions = session.subscriptions.lock().unwrap();
            subscriptions.extend(filters.iter().cloned());
        }
        registry.note_subscriptions(session);
        if session.persistent {
            self.save(&registry)?;
        }
        Ok(registry
            .retained
            .values()
            .filter(|message| filters.iter().any(|(f, _)| matches(&message.topic, f)))
            .cloned()
            .collect())
    }

    pub fn unsubscribe(
        &self,
        session: &Arc<Session>,
        filters: &[String],
    ) -> Result<(), SessionError> {
        let mut registry = self.registry.lock().unwrap();
        {
            let mut subscriptions = session.subscriptions.lock().unwrap();
            filters.iter().for_each(|f| {
                subscriptions.remove(f);
            });
        }
        registry.note_subscriptions(session);
        if session.persistent {
            self.save(&registry)?;
        }
        Ok(())
    }

    /// Route `messages` (in order) to every session subscribed to them. Returns once
    /// each QoS 1 copy is held: on disk for a persistent session. `only` limits the
    /// routing to one session (retained messages sent on a new subscription).
    pub async fn route(
        &self,
        messages: &[Publish],
        only: Option<&Arc<Session>>,
    ) -> Result<(), SessionError> {
        let mut queued: Vec<(Arc<Session>, Vec<Entry>)> = Vec::new();
        {
            let mut registry = self.registry.lock().unwrap();
            for message in messages {
                if message.retain && only.is_none() {
                    if message.payload.is_empty() {
                        registry.retained.remove(&message.topic);
                    } else {
                        registry
                            .retained
                            .insert(message.topic.clone(), message.clone());
                    }
                }
                let targets: Vec<&Arc<Session>> = match only {
                    Some(session) => vec![session],
                    None => registry.subscribers.values().collect(),
                };
                for session in targets {
                    match session.wants(&message.topic, message.qos) {
                        None => {}
                        Some(QoS::AtMostOnce) => send_live(session, message),
                        Some(_) => {
                            let entry = Entry {
                                topic: message.topic.clone(),
                                payload: message.payload.clone(),
                            };
                            match queued.iter_mut().find(|(s, _)| Arc::ptr_eq(s, session)) {
                                Some((_, entries)) => entries.push(entry),
                                None => queued.push((session.clone(), vec![entry])),
                            }
                        }
                    }
                }
            }
        }
        for (session, entries) in queued {
            session.queue.push(entries).await?;
        }
        Ok(())
    }

    /// Write `sessions.json` so that a crash leaves the old file or the new one.
    fn save(&self, registry: &Registry) -> Result<(), SessionError> {
        let stored = Stored(
            registry
                .sessions
                .values()
                .filter(|session| session.persistent)
                .map(|session| {
                    let filters = session.subscriptions.lock().unwrap();
                    let filters = filters.iter().map(|(f, q)| (f.clone(), *q as u8)).collect();
                    (session.client_id.clone(), filters)
                })
                .collect(),
        );
        let file = self.dir.join("sessions.json");
        let temporary = self.dir.join("sessions.json.tmp");
        let io = |source| SessionError::Io {
            path: file.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&stored).expect("sessions serialize");
        let write = std::fs::File::create(&temporary).and_then(|mut out| {
            std::io::Write::write_all(&mut out, &bytes)?;
            out.sync_all()
        });
        write.map_err(io)?;
        std::fs::rename(&temporary, &file).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

impl Registry {
    /// Keep `session` among the subscribers exactly while it holds a subscription and
    /// is the session of its client id.
    fn note_subscriptions(&mut self, session: &Arc<Session>) {
        let current = (self.sessions.get(&session.client_id))
            .is_none_or(|registered| Arc::ptr_eq(registered, session));
        if !current {
            return;
        }
        if session.subscriptions.lock().unwrap().is_empty() {
            self.subscribers.remove(&session.client_id);
        } else {
            self.subscribers
                .insert(session.client_id.clone(), session.clone());
        }
    }

    /// How many sessions a publish is matched against.
    #[cfg(test)]
    fn subscribers(&self) -> usize {
        self.subscribers.len()
    }
}

impl Session {
    fn new(client_id: &str, persistent: bool, queue: Queue) -> Session {
        Session {
            client_id: client_id.to_owned(),
            persistent,
            subscriptions: Mutex::default(),
            queue,
            live: Mutex::new(None),
            owner: Mutex::new((0, CancellationToken::new())),
        }
    }
}

/// Hand a QoS 0 message to the connected client, or drop it (counted): QoS 0 makes no
/// promise, but a drop is never silent.
fn send_live(session: &Session, message: &Publish) {
    let live = session.live.lock().unwrap();
    let mut copy = message.clone();
    copy.qos = QoS::AtMostOnce;
    copy.retain = false;
    copy.pkid = 0;
    let sent = live
        .as_ref()
        .is_some_and(|sender| sender.try_send(copy).is_ok());
    if !sent && live.is_some() {
        ::metrics::counter!("sluice_broker_dropped_total", "reason" => "qos0_client_slow")
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(topic: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, b"{}".to_vec())
    }

    fn held(session: &Session) -> usize {
        session.queue.read(0, usize::MAX).unwrap().len()
    }

    /// Thousands of devices that only publish stay out of every publish's routing,
    /// while those that subscribe get what they asked for, exactly as long as they ask.
    #[tokio::test]
    async fn a_publish_is_matched_only_against_sessions_that_subscribe() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path(), 1 << 20).unwrap();
        let stop = CancellationToken::new();
        sessions
            .declare("source", &["sensors/+/telemetry".to_owned()])
            .unwrap();
        let devices: Vec<Attached> = (0..1000)
            .map(|n| sessions.attach(&format!("dev-{n}"), true, &stop).unwrap())
            .collect();
        let consumer = sessions.attach("consumer", true, &stop).unwrap();
        (sessions.subscribe(
            &consumer.session,
            &[("sensors/#".to_owned(), QoS::AtLeastOnce)],
        ))
        .unwrap();
        let subscribers = || sessions.registry.lock().unwrap().subscribers();
        assert_eq!(subscribers(), 2, "the source and the consumer");

        let source = sessions.registry.lock().unwrap().sessions["source"].clone();
        sessions
            .route(&[reading("sensors/dev-1/telemetry")], None)
            .await
            .unwrap();
        assert_eq!((held(&source), held(&consumer.session)), (1, 1));
        assert!(devices.iter().all(|device| held(&device.session) == 0));

        sessions
            .unsubscribe(&consumer.session, &["sensors/#".to_owned()])
            .unwrap();
        assert_eq!(subscribers(), 1);
        sessions
            .route(&[reading("sensors/dev-2/telemetry")], None)
            .await
            .unwrap();
        assert_eq!((held(&source), held(&consumer.session)), (2, 1));
    }

    /// A session replaced by a clean one under the same client id takes its
    /// subscriptions with it, and a clean session's end takes it out of the routing.
    #[tokio::test]
    async fn replaced_and_ended_sessions_leave_the_routing() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path(), 1 << 20).unwrap();
        let stop = CancellationToken::new();
        let filters = [("alerts/#".to_owned(), QoS::AtLeastOnce)];
        let first = sessions.attach("watcher", true, &stop).unwrap();
        sessions.subscribe(&first.session, &filters).unwrap();
        let second = sessions.attach("watcher", true, &stop).unwrap();
        let subscribers = || sessions.registry.lock().unwrap().subscribers();
        assert_eq!(subscribers(), 0, "the new session has no subscriptions");
        // The first connection ends after the takeover: the new session is not touched.
        sessions.detach(&first.session, first.generation);
        sessions.subscribe(&second.session, &filters).unwrap();
        sessions.route(&[reading("alerts/a")], None).await.unwrap();
        assert_eq!((held(&first.session), held(&second.session)), (0, 1));
        sessions.detach(&second.session, second.generation);
        assert_eq!(subscribers(), 0);
    }

    /// Persistent sessions kept in `sessions.json` are routed to after a restart.
    #[tokio::test]
    async fn stored_subscribers_are_routed_to_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sessions = Sessions::open(dir.path(), 1 << 20).unwrap();
            sessions
                .declare("source", &["sensors/#".to_owned()])
                .unwrap();
        }
        let sessions = Sessions::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(sessions.registry.lock().unwrap().subscribers(), 1);
        sessions.route(&[reading("sensors/a")], None).await.unwrap();
        let source = sessions.registry.lock().unwrap().sessions["source"].clone();
        assert_eq!(held(&source), 1);
    }
}
