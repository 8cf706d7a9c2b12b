//! Debian's Chromium, headless, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL, read from its descriptor 3
//! and written to its descriptor 4): one page to read with JavaScript, click through
//! with the mouse and type into.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    /// The page's session, once attached.
    session: Option<String>,
    /// The password given when a page asks for Basic credentials.
    password: Option<String>,
}

impl Browser {
    /// A page on `url`; `password` answers its Basic prompts (as a person would type the
    /// admin token there). The page is driven by the calls of the test: between them it
    /// waits for its requests.
    pub fn open(url: &str, password: Option<&str>) -> Browser {
        // The shell moves the pipes to the descriptors Chromium reads and writes.
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"exec chromium "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#,
                "sh",
            ])
            .args(HEADLESS)
            .args(["--remote-debugging-pipe", "about:blank"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium: run scripts/setup");
        let mut browser = Browser {
            to: child.stdin.take().unwrap(),
            from: BufReader::new(child.stdout.take().unwrap()),
            child,
            next_id: 0,
            session: None,
            password: password.map(str::to_owned),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        if password.is_some() {
            browser.call("Fetch.enable", json!({ "handleAuthRequests": true }));
        }
        browser.call("Page.navigate", json!({ "url": url }));
        browser
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let mut result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].take()
    }

    /// The text of the element `selector` finds; empty without one.
    pub fn text(&mut self, selector: &str) -> String {
        let text = self.eval(&format!(
            "document.querySelector({})?.textContent ?? ''",
            json!(selector)
        ));
        text.as_str().unwrap().to_owned()
    }

    /// Click the middle of the element `selector` finds, with the mouse.
    pub fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{ block: 'center' }});
               const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": at[0], "y": at[1], "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Type `text` into the focused element, as a keyboard would (it fires `input`).
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut message = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium is running");
        self.next_id
    }

    /// Send a command and wait for its result, letting the page's requests go on.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        loop {
            let mut bytes = Vec::new();
            self.from.read_until(0, &mut bytes).unwrap();
            assert_eq!(bytes.pop(), Some(0), "chromium ended");
            let mut message: Value = serde_json::from_slice(&bytes).unwrap();
            if message["id"] == id {
                assert!(message["error"].is_null(), "{method}: {}", message["error"]);
                return message["result"].take();
            }
            let request = message["params"]["requestId"].take();
            match message["method"].as_str() {
                Some("Fetch.requestPaused") => {
                    self.send("Fetch.continueRequest", json!({ "requestId": request }));
                }
                Some("Fetch.authRequired") => {
                    let answer = json!({ "response": "ProvideCredentials", "username": "admin",
                        "password": self.password });
                    self.send(
                        "Fetch.continueWithAuth",
                        json!({ "requestId": request, "authChallengeResponse": answer }),
                    );
                }
                _ => {}
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the tests run Debian's Chromium.
pub const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Debian's Chromium, headless, on `url` (JavaScript runs for 4 s of virtual time).
pub fn chromium(args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args(HEADLESS)
        .arg("--virtual-time-budget=4000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium: run scripts/setup")
}

/// The `data-stage` names and the `data-rate` figures of the admin page's DOM.
pub fn admin_page(dom: &str) -> (Vec<String>, Vec<f64>) {
    let attribute = |name: &str| -> Vec<String> {
        dom.split(&format!("{name}=\""))
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_owned))
            .collect()
    };
    let rates = attribute("data-rate")
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    (attribute("data-stage"), rates)
}
