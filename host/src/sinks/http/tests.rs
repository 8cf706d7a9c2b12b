//! The sink against a receiver in this process: what it sends, and what each answer
//! makes of the events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap as Headers, Method as HttpMethod, StatusCode};

use super::*;
use crate::event::Event;
use crate::pipeline::{Ack, Batch};
use crate::sinks::Sink;

/// A request as the receiver got it.
struct Got {
    method: HttpMethod,
    headers: Headers,
    body: String,
}

/// A scripted answer: status, `Retry-After`, body.
type Answer = (u16, Option<&'static str>, String);

/// An HTTP server answering each request with the next scripted answer (200 once they
/// run out), recording what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (record, script) = (got.clone(), answers.clone());
        let app = axum::Router::new().fallback(
            move |method: HttpMethod, headers: Headers, body: String| async move {
                record.lock().unwrap().push(Got {
                    method,
                    headers,
                    body,
                });
                let (status, retry_after, body): Answer =
                    script.lock().unwrap().pop_front().unwrap_or((200, None, String::new()));
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                if let Some(wait) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", wait.parse().unwrap());
                }
                response
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got, answers }
    }

    fn answer(&self, status: u16, retry_after: Option<&'static str>, body: &str) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, retry_after, body.to_owned()));
    }

    fn bodies(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|got| got.body.clone()).collect()
    }
}

fn config(text: &str) -> HttpSinkConfig {
    toml::from_str(text).unwrap()
}

fn sink(text: &str) -> HttpSink {
    config(text).open("hook").unwrap()
}

/// A batch of `payloads` whose acknowledgements count into the counter returned.
fn batch(payloads: &[&str]) -> (Batch, Arc<AtomicUsize>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let mut batch = Batch::default();
    for payload in payloads {
        let counter = acked.clone();
        let ack = Ack::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        batch.push(Event::new(payload.to_string(), "alerts"), ack);
    }
    (batch, acked)
}

fn payloads(batch: &Batch) -> Vec<String> {
    batch
        .events
        .iter()
        .map(|event| event.payload_preview(usize::MAX))
        .collect()
}

const FIRING: &str = r#"{"alert":"overheating","status":"firing","key":"gw1","last_value":91.5}"#;
const RESOLVED: &str = r#"{"alert":"overheating","status":"resolved","key":"gw1","last_value":70}"#;

#[tokio::test]
async fn each_event_is_posted_with_its_body_and_headers_and_acknowledged_on_2xx() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&format!(
        r#"
url = "{}"
token = "t0ken"
headers = {{ X-Secret = "s3cret" }}
body = '{{"text": "{{{{alert}}}} is {{{{status}}}}", "value": {{{{last_value}}}}}}'
"#,
        receiver.url
    ));
    let (events, acked) = batch(&[FIRING, RESOLVED]);
    sink.write(events).await.unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 2);
    assert_eq!(
        receiver.bodies(),
        [
            r#"{"text": "overheating is firing", "value": 91.5}"#,
            r#"{"text": "overheating is resolved", "value": 70}"#
        ]
    );
    let got = receiver.got.lock().unwrap();
    assert_eq!(got[0].method, HttpMethod::POST);
    assert_eq!(got[0].headers["authorization"], "Bearer t0ken");
    assert_eq!(got[0].headers["x-secret"], "s3cret");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert!(sink.take_rejected().is_empty());
}

#[tokio::test]
async fn a_refusal_dead_letters_the_event_with_the_status_and_the_body() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&format!("url = \"{}\"\nmethod = \"PUT\"", receiver.url));
    receiver.answer(400, None, r#"{"error":"labels missing"}"#);
    receiver.answer(404, None, &"x".repeat(5000));
    let (events, acked) = batch(&[FIRING, RESOLVED, FIRING]);
    sink.write(events).await.unwrap();
    let origin = receiver.url.trim_end_matches("/hook");
    let rejected = sink.take_rejected();
    assert_eq!(
        rejected[0].reason,
        format!(r#"HTTP 400 from {origin}: {{"error":"labels missing"}}"#)
    );
    // A long body is cut to its first KiB.
    let long = &rejected[1].reason;
    assert!(long.starts_with(&format!("HTTP 404 from {origin}: xxx")), "{long}");
    assert!(long.ends_with('…') && long.len() < 1100, "{long}");
    assert_eq!(rejected.len(), 2);
    drop(rejected);
    // The third was delivered: refusals do not hold up the events behind them.
    assert_eq!(receiver.got.lock().unwrap()[2].method, HttpMethod::PUT);
    assert_eq!(acked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unavailable_receiver_gets_the_same_events_again_in_order_when_it_asks() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&format!("url = \"{}\"", receiver.url));
    receiver.answer(200, None, "");
    receiver.answer(503, Some("7"), "maintenance");
    let (events, acked) = batch(&[FIRING, RESOLVED, r#"{"n":3}"#]);
    let (unsent, error) = sink.write(events).await.unwrap_err();
    assert_eq!(payloads(&unsent), [RESOLVED, r#"{"n":3}"#]);
    assert!(error.to_string().starts_with("HTTP 503 from"), "{error}");
    assert_eq!(sink.retry_delay(), Some(Duration::from_secs(7)));
    assert_eq!(acked.load(Ordering::SeqCst), 1);
    receiver.answer(429, None, "");
    let (unsent, _) = sink.write(unsent).await.unwrap_err();
    // Without a Retry-After: the backoff, with its jitter.
    let backoff = sink.retry_delay().unwrap();
    assert!(backoff <= Duration::from_secs(1), "{backoff:?}");
    sink.write(unsent).await.unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 3);
    assert!(sink.take_rejected().is_empty());
    let bodies = receiver.bodies();
    assert_eq!(bodies[1..], [RESOLVED, RESOLVED, RESOLVED, r#"{"n":3}"#]);
}

#[tokio::test]
async fn a_receiver_failing_past_retry_for_turns_failures_into_dead_letters() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sink = sink(&format!(
        "url = \"http://127.0.0.1:{port}/hook\"\nretry_for_secs = 0"
    ));
    let (events, _) = batch(&[FIRING]);
    sink.write(events).await.unwrap();
    let rejected = sink.take_rejected();
    let reason = &rejected[0].reason;
    assert!(
        reason.starts_with(&format!(
            "the receiver has failed for 0s (1 attempts); the last: POST http://127.0.0.1:{port}: "
        )),
        "{reason}"
    );
}

#[tokio::test]
async fn batch_mode_posts_json_arrays_of_up_to_max_events() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&format!(
        "url = \"{}\"\nmode = \"batch\"\nmax_events = 2",
        receiver.url
    ));
    let (events, acked) = batch(&["1", "not json", r#"{"a":2}"#, "3", "[4]"]);
    sink.write(events).await.unwrap();
    assert_eq!(receiver.bodies(), [r#"[1,{"a":2}]"#, "[3,[4]]"]);
    assert_eq!(acked.load(Ordering::SeqCst), 4);
    let rejected = sink.take_rejected();
    assert_eq!(
        rejected[0].reason,
        "the payload is not JSON, so it cannot be an element of a batch's JSON array"
    );
}

#[tokio::test]
async fn a_payload_without_the_fields_of_the_template_is_a_dead_letter() {
    let receiver = Receiver::start().await;
    let mut sink = sink(&format!(
        "url = \"{}\"\nbody = '{{\"a\": {{{{alert}}}}}}'",
        receiver.url
    ));
    let (events, acked) = batch(&["plain text", FIRING]);
    sink.write(events).await.unwrap();
    assert_eq!(receiver.bodies(), [r#"{"a": "overheating"}"#]);
    assert_eq!(acked.load(Ordering::SeqCst), 1);
    assert_eq!(
        sink.take_rejected()[0].reason,
        "the payload is not a JSON object, so `body` has no fields to take"
    );
}

fn problems(text: &str) -> Vec<String> {
    config(text)
        .problems()
        .into_iter()
        .map(|problem| problem.message)
        .collect()
}

#[test]
fn credentials_travel_in_clear_only_on_this_machine_or_when_insecure() {
    let clear = "credentials would travel in clear to `http://alerts.example/hook`";
    assert_eq!(
        problems("url = \"http://alerts.example/hook\"\ntoken = \"t\""),
        [clear]
    );
    assert_eq!(
        problems("url = \"http://alerts.example/hook\"\nheaders = { authorization = \"Basic x\" }"),
        [clear]
    );
    for fine in [
        "url = \"http://alerts.example/hook\"\ntoken = \"t\"\ninsecure = true",
        "url = \"https://alerts.example/hook\"\ntoken = \"t\"",
        "url = \"http://127.0.0.1:9093/hook\"\ntoken = \"t\"",
        "url = \"http://[::1]:9093/hook\"\ntoken = \"t\"",
        "url = \"http://localhost/hook\"\ntoken = \"t\"",
        "url = \"http://alerts.example/hook\"",
    ] {
        assert!(problems(fine).is_empty(), "{fine}: {:?}", problems(fine));
    }
}

#[test]
fn validate_names_what_cannot_work() {
    assert_eq!(
        problems("url = \"ftp://x/y\""),
        ["`url` `ftp://x/y` is not an http:// or https:// URL"]
    );
    assert_eq!(
        problems("url = \"https://x\"\nbody = '{\"a\": {{alert}'"),
        ["`body` has an unclosed `{{` at line 1, column 7"]
    );
    assert_eq!(
        problems("url = \"https://x\"\nmax_events = 5"),
        ["`max_events` is for `mode = \"batch\"`"]
    );
    assert_eq!(
        problems("url = \"http://x\"\nca_file = \"ca.pem\""),
        ["`ca_file`, `cert_file` and `key_file` are for TLS"]
    );
    assert_eq!(
        problems("url = \"https://x\"\ntoken = \"t\"\nheaders = { Authorization = \"Bearer u\" }"),
        ["both `token` and an `Authorization` header are set"]
    );
    assert!(toml::from_str::<HttpSinkConfig>("url = \"https://x\"\ntoken = \"\"").is_err());
    assert_eq!(
        format!("{:?}", config("url = \"https://x\"\ntoken = \"s3cret\"").token),
        "Some(ClientToken(..))"
    );
}
