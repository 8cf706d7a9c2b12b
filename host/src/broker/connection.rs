//! One client connection: MQTT 3.1.1 over TCP. A QoS 1 (or 2) message is answered
//! only once [`Sessions::route`] has it held for every subscriber, so a publisher
//! deletes nothing the broker could lose; messages to this client come from its
//! session's queue, and are removed from it on the client's PUBACK.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::{Error as ProtocolError, QoS, valid_filter, valid_topic};
use rumqttc::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::access::{Access, Grant, Peer};
use super::sessions::{Attached, Session, SessionError, Sessions};
use crate::connect::certs::PeerNames;

/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
pub struct Shared {
    /// Who is admitted; replaced on a reload.
    pub access: watch::Sender<Arc<Access>>,
    pub sessions: Sessions,
    pub max_inflight: usize,
    pub max_packet_bytes: usize,
}

/// Why a connection ended other than by the client's DISCONNECT.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("protocol violation: {0}")]
    Violation(String),
    #[error("no packet within 1.5 × its keep-alive")]
    KeepAlive,
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("the connection closed")]
    Closed,
    #[error("no longer admitted after a config change")]
    Revoked,
}

/// A client's byte stream: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Serve one client from `peer`: over TLS when the broker has a certificate (the
/// handshake and the CONNECT together within [`CONNECT_TIMEOUT`]).
pub async fn serve(
    tcp: TcpStream,
    peer: Option<SocketAddr>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut client = Peer {
        address: peer,
        certificate: None,
    };
    let mut stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(acceptor) => match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                client.certificate = PeerNames::of_chain(tls.get_ref().1.peer_certificates());
                Box::new(tls)
            }
            Ok(Err(error)) => {
                ::metrics::counter!("sluice_broker_refused_total", "reason" => "tls_handshake")
                    .increment(1);
                tracing::warn!(?peer, "embedded broker: TLS handshake failed: {error}");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    ?peer,
                    "embedded broker: no TLS handshake within {CONNECT_TIMEOUT:?}"
                );
                return;
            }
        },
    };
    let mut input = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        first_packet(&mut stream, &mut input, &shared),
    )
    .await
    {
        Ok(Ok(connect)) => connect,
        Ok(Err(error)) => {
            tracing::debug!(?peer, "embedded broker: refused a connection: {error}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                ?peer,
                "embedded broker: no CONNECT within {CONNECT_TIMEOUT:?}"
            );
            return;
        }
    };
    let refuse = |code| Packet::ConnAck(ConnAck::new(code, false));
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        let _ = write(
            &mut stream,
            &refuse(ConnectReturnCode::RefusedProtocolVersion),
            &shared,
        )
        .await;
        return;
    }
    let client_id = match (connect.client_id.is_empty(), connect.clean_session) {
        (false, _) => connect.client_id.clone(),
        (true, true) => format!("sluice-anonymous-{}", anonymous_number()),
        (true, false) => {
            let _ = write(
                &mut stream,
                &refuse(ConnectReturnCode::BadClientId),
                &shared,
            )
            .await;
            return;
        }
    };
    let admitted = shared
        .access
        .borrow()
        .admit(&client, connect.login.as_ref());
    let grant = match admitted {
        Ok(grant) => grant,
        Err(code) => {
            ::metrics::counter!("sluice_broker_refused_total", "reason" => "not_admitted")
                .increment(1);
            let user = connect.login.as_ref().map(|login| login.username.as_str());
            let certificate = client.certificate.as_ref().map(PeerNames::describe);
            tracing::warn!(?peer, client = %connect.client_id, ?user, ?certificate, "embedded broker: refused a connection: {code:?}");
            let _ = write(&mut stream, &refuse(code), &shared).await;
            return;
        }
    };
    tracing::debug!(?peer, client = %connect.client_id, who = %grant.who, "embedded broker: admitted");
    let attached = match shared
        .sessions
        .attach(&client_id, connect.clean_session, &stop)
    {
        Ok(attached) => attached,
        Err(error) => {
            tracing::error!(client = %client_id, "embedded broker: cannot keep this session: {error}");
            let _ = write(
                &mut stream,
                &refuse(ConnectReturnCode::ServiceUnavailable),
                &shared,
            )
            .await;
            return;
        }
    };
    let session = attached.session.clone();
    let generation = attached.generation;
    let mut connection = Connection {
        peer: client,
        login: connect.login.clone(),
        grant,
        access: shared.access.subscribe(),
        stream,
        input,
        output: BytesMut::new(),
        shared: shared.clone(),
        inflight: HashMap::new(),
        next_pkid: 0,
        received_qos2: HashSet::new(),
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
    };
    let ended = connection.run(attached).await;
    shared.sessions.detach(&session, generation);
    match ended {
        Ok(()) => tracing::debug!(client = %client_id, "embedded broker: client disconnected"),
        Err(error) => {
            tracing::debug!(client = %client_id, "embedded broker: connection ended: {error}");
            if let Some(will) = connect.last_will {
                let mut message = Publish::new(will.topic, will.qos, will.message.to_vec());
                message.retain = will.retain;
                if let Err(error) = shared.sessions.route(&[message], None).await {
                    tracing::error!(client = %client_id, "embedded broker: its last will was not kept: {error}");
                }
            }
        }
    }
}

/// A number for a client that gave no id, unique in this process.
fn anonymous_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn first_packet(
    stream: &mut Box<dyn Stream>,
    input: &mut BytesMut,
    shared: &Shared,
) -> Result<Connect, Ended> {
    loop {
        match Packet::read(input, shared.max_packet_bytes) {
            Ok(Packet::Connect(connect)) => return Ok(connect),
            Ok(other) => return Err(Ended::Violation(format!("{other:?} before CONNECT"))),
            Err(ProtocolError::InsufficientBytes(_)) => {
                if stream.read_buf(input).await? == 0 {
                    return Err(Ended::Closed);
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn write(
    stream: &mut Box<dyn Stream>,
    packet: &Packet,
    shared: &Shared,
) -> Result<(), Ended> {
    let mut out = BytesMut::new();
    packet.write(&mut out, shared.max_packet_bytes)?;
    stream.write_all(&out).await?;
    Ok(())
}

struct Connection {
    peer: Peer,
    login: Option<Login>,
    /// What the client may do, checked again whenever the access changes.
    grant: Grant,
    access: watch::Receiver<Arc<Access>>,
    stream: Box<dyn Stream>,
    input: BytesMut,
    output: BytesMut,
    shared: Arc<Shared>,
    /// Messages sent to the client and not yet acknowledged: packet id → queue seq.
    inflight: HashMap<u16, u64>,
    next_pkid: u16,
    /// QoS 2 packet ids stored and answered with PUBREC, not yet released.
    received_qos2: HashSet<u16>,
    keep_alive: Option<Duration>,
}

impl Connection {
    async fn run(&mut self, attached: Attached) -> Result<(), Ended> {
        let Attached {
            session,
            session_present,
            owner,
            mut live,
            ..
        } = attached;
        self.queue(&Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            session_present,
        )))?;
        let mut next = session.queue.restart_sending();
        let mut deadline = self.keep_alive.map(|d| tokio::time::Instant::now() + d);
        loop {
            // Registered before reading the queue, so that no append in between is missed.
            let appended = session.queue.appended().notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            next = self.send_queued(&session, next)?;
            self.flush().await?;
            let room = self.inflight.len() < self.shared.max_inflight;
            let keep_alive = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = owner.cancelled() => return Ok(()),
                read = self.stream.read_buf(&mut self.input) => {
                    if read? == 0 {
                        return Err(Ended::Closed);
                    }
                    deadline = self.keep_alive.map(|d| tokio::time::Instant::now() + d);
                    if self.handle_input(&session).await? {
                        return Ok(());
                    }
                }
                Some(message) = live.recv() => self.queue(&Packet::Publish(message))?,
                Ok(()) = self.access.changed() => {
                    let admitted = self.access.borrow_and_update().admit(&self.peer, self.login.as_ref());
                    match admitted {
                        Ok(grant) => self.grant = grant,
                        Err(_) => return Err(Ended::Revoked),
                    }
                }
                _ = appended, if room => {}
                _ = keep_alive => return Err(Ended::KeepAlive),
            }
        }
    }

    /// Messages from the session's queue, as far as the in-flight window allows.
    fn send_queued(&mut self, session: &Session, next: u64) -> Result<u64, Ended> {
        let room = self.shared.max_inflight.saturating_sub(self.inflight.len());
        if room == 0 {
            return Ok(next);
        }
        let mut next = next;
        for (seq, entry) in session.queue.read(next, room).map_err(SessionError::from)? {
            let pkid = self.free_pkid();
            let mut message = Publish::new(entry.topic, QoS::AtLeastOnce, Vec::new());
            message.payload = entry.payload;
            message.pkid = pkid;
            self.queue(&Packet::Publish(message))?;
            self.inflight.insert(pkid, seq);
            next = seq + 1;
        }
        Ok(next)
    }

    fn free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), Ended> {
        packet.write(&mut self.output, self.shared.max_packet_bytes)?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Ended> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Every whole packet read so far. Consecutive publishes are routed together (one
    /// disk sync for all of them) before any is acknowledged. True on DISCONNECT.
    async fn handle_input(&mut self, session: &Arc<Session>) -> Result<bool, Ended> {
        let mut publishes: Vec<Publish> = Vec::new();
        let mut disconnect = false;
        loop {
            let packet = match Packet::read(&mut self.input, self.shared.max_packet_bytes) {
                Ok(packet) => packet,
                Err(ProtocolError::InsufficientBytes(_)) => break,
                Err(ProtocolError::PayloadSizeLimitExceeded(size)) => {
                    ::metrics::counter!("sluice_broker_refused_total", "reason" => "packet_too_large")
                        .increment(1);
                    tracing::warn!(
                        client = %session.client_id,
                        size,
                        limit = self.shared.max_packet_bytes,
                        "embedded broker: a packet over the size limit; closing the connection"
                    );
                    return Err(ProtocolError::PayloadSizeLimitExceeded(size).into());
                }
                Err(error) => return Err(error.into()),
            };
            match packet {
                Packet::Publish(message) => {
                    if !valid_topic(&message.topic) {
                        return Err(Ended::Violation(format!(
                            "publish to `{}`, not a topic name",
                            message.topic
                        )));
                    }
                    publishes.push(message);
                    continue;
                }
                other => {
                    self.route(session, &mut publishes).await?;
                    match other {
                        Packet::Disconnect => {
                            disconnect = true;
                            break;
                        }
                        other => self.answer(session, other).await?,
                    }
                }
            }
        }
        self.route(session, &mut publishes).await?;
        Ok(disconnect)
    }

    /// Hold `publishes` for their subscribers, then acknowledge them.
    async fn route(
        &mut self,
        session: &Session,
        publishes: &mut Vec<Publish>,
    ) -> Result<(), Ended> {
        if publishes.is_empty() {
            return Ok(());
        }
        // A QoS 2 message already stored (a resend before PUBREL) is not routed again.
        let fresh: Vec<Publish> = publishes
            .iter()
            .filter(|m| !(m.qos == QoS::ExactlyOnce && self.received_qos2.contains(&m.pkid)))
            .cloned()
            .collect();
        let offered = fresh.len();
        let fresh: Vec<Publish> = fresh
            .into_iter()
            .filter(|message| self.grant.may_publish(&message.topic))
            .collect();
        if fresh.len() < offered {
            // MQTT 3.1.1 has no negative PUBACK: as other brokers do, a refused message
            // is acknowledged and not routed; the refusal is counted and logged here.
            let refused = (offered - fresh.len()) as u64;
            ::metrics::counter!("sluice_broker_refused_total", "reason" => "publish_not_allowed")
                .increment(refused);
            tracing::warn!(
                client = %session.client_id,
                who = %self.grant.who,
                refused,
                "embedded broker: refused publishes outside the client's topics"
            );
        }
        if let Err(error) = self.shared.sessions.route(&fresh, None).await {
            tracing::error!(client = %session.client_id, "embedded broker: cannot hold a message; closing the connection unacknowledged: {error}");
            return Err(error.into());
        }
        for message in publishes.drain(..) {
            match message.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.queue(&Packet::PubAck(PubAck::new(message.pkid)))?,
                QoS::ExactlyOnce => {
                    self.received_qos2.insert(message.pkid);
                    self.queue(&Packet::PubRec(PubRec::new(message.pkid)))?;
                }
            }
        }
        Ok(())
    }

    async fn answer(&mut self, session: &Arc<Session>, packet: Packet) -> Result<(), Ended> {
        match packet {
            Packet::PubAck(ack) => {
                if let Some(seq) = self.inflight.remove(&ack.pkid) {
                    session.queue.ack(seq).map_err(SessionError::from)?;
                }
            }
            Packet::PubRel(release) => {
                self.received_qos2.remove(&release.pkid);
                self.queue(&Packet::PubComp(PubComp::new(release.pkid)))?;
            }
            Packet::Subscribe(subscribe) => {
                let mut granted = Vec::new();
                let mut codes = Vec::new();
                for filter in subscribe.filters {
                    if filter.path.starts_with("$share/") {
                        // Refused out loud rather than accepted and never matched.
                        tracing::warn!(
                            client = %session.client_id,
                            filter = %filter.path,
                            "embedded broker: shared subscriptions are not supported; use an external broker (e.g. Mosquitto) for `shared_group`"
                        );
                        codes.push(SubscribeReasonCode::Failure);
                    } else if !self.grant.may_subscribe(&filter.path) {
                        ::metrics::counter!("sluice_broker_refused_total", "reason" => "subscribe_not_allowed")
                            .increment(1);
                        tracing::warn!(
                            client = %session.client_id,
                            who = %self.grant.who,
                            filter = %filter.path,
                            "embedded broker: refused a subscription outside the client's topics"
                        );
                        codes.push(SubscribeReasonCode::Failure);
                    } else if valid_filter(&filter.path) {
                        let qos = match filter.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            _ => QoS::AtLeastOnce,
                        };
                        codes.push(SubscribeReasonCode::Success(qos));
                        granted.push((filter.path, qos));
                    } else {
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                let retained = self.shared.sessions.subscribe(session, &granted)?;
                self.queue(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))?;
                self.shared.sessions.route(&retained, Some(session)).await?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.shared
                    .sessions
                    .unsubscribe(session, &unsubscribe.topics)?;
                self.queue(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))?;
            }
            Packet::PingReq => self.queue(&Packet::PingResp)?,
            // The broker sends nothing at QoS 2, so these answer nothing of ours.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            other => return Err(Ended::Violation(format!("unexpected {other:?}"))),
        }
        Ok(())
    }
}
