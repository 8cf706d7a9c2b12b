//! A real HTTP receiver for webhooks, in the test process: it records every request (in
//! order of arrival), answers 200 or what the test scripts (a 400 with a body, a 503
//! with `Retry-After`), can check each request's shape as a real API would (refusing a
//! wrong one with 400 and why), and can be stopped and started again on its port, as an
//! outage.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{}: {error}", self.body))
    }
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, String);

/// Checks a request's shape: `Err(why)` is answered 400 with `why`.
type Check = Box<dyn Fn(&Request) -> Result<(), String> + Send>;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    answers: Mutex<VecDeque<Answer>>,
    check: Mutex<Option<Check>>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    /// Set to stop the current listener and its connections.
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut receiver = Receiver {
            port,
            shared: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        receiver.serve(listener);
        receiver
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next request with `status`, `headers` and `body` (after the scripted
    /// answers before it; 200 once they run out).
    pub fn answer(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        (self.shared.answers.lock().unwrap()).push_back((status, headers, body.to_owned()));
    }

    /// Refuse (400, with why) every request that `check` finds wrong.
    pub fn check(&self, check: impl Fn(&Request) -> Result<(), String> + Send + 'static) {
        *self.shared.check.lock().unwrap() = Some(Box::new(check));
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests answered 2xx, once there are `count` of them.
    pub fn accepted(&self, count: usize, timeout: Duration) -> Vec<Request> {
        let accepted = || -> Vec<Request> {
            let requests = self.requests().into_iter();
            requests
                .filter(|r| (200..300).contains(&r.status))
                .collect()
        };
        wait_until(timeout, &format!("{count} accepted requests"), || {
            accepted().len() >= count
        });
        accepted()
    }

    /// Close the port and every open connection: connecting is refused until `restart`.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop and the connections notice within their poll interval.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Listen on the same port again.
    pub fn restart(&mut self) {
        self.stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (shared, stop) = (self.shared.clone(), self.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (shared, stop) = (shared.clone(), stop.clone());
                        std::thread::spawn(move || connection(stream, &shared, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Serve requests on one (keep-alive) connection until the client closes it or the
/// receiver stops.
fn connection(stream: TcpStream, shared: &Shared, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some(mut request) = read_request(&mut reader, stop) else {
            return;
        };
        let check = shared.check.lock().unwrap();
        let refusal = check.as_ref().and_then(|check| check(&request).err());
        drop(check);
        let (status, headers, body) = match refusal {
            Some(why) => (400, Vec::new(), why),
            None => (shared.answers.lock().unwrap().pop_front()).unwrap_or((
                200,
                Vec::new(),
                String::new(),
            )),
        };
        request.status = status;
        shared.requests.lock().unwrap().push(request);
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let head = format!(
            "HTTP/1.1 {status} Answer\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// The next request, or `None` once the connection closes or the receiver stops.
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Request> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read_until(b'\n', &mut head) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; length];
    let mut read = 0;
    while read < length {
        match reader.read(&mut body[read..]) {
            Ok(0) => return None,
            Ok(n) => read += n,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
        at: Instant::now(),
        status: 0,
    })
}
