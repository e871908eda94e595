//! Headless Chromium driven over the DevTools protocol (a WebSocket to the
//! page target): navigate, evaluate JavaScript, take a screenshot. Used to
//! check what the status page shows. The browser runs with a throwaway
//! profile and is killed (by its PID) on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::{TempDir, WsClient, require_program, within};

/// A running headless Chromium and its one page.
pub struct Browser {
    child: Child,
    page: WsClient,
    next_id: u64,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium (installing Debian's `chromium` if it is missing)
    /// with a `width`×`height` window, and attaches to its blank page.
    pub async fn start(width: u32, height: u32) -> Browser {
        require_program("chromium", "chromium");
        let profile = TempDir::new("chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.0.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("chromium's stderr");
        let stderr = tokio::process::ChildStderr::from_std(stderr).expect("async stderr");
        // Chromium says where its DevTools endpoint is on stderr.
        let port = within("chromium's DevTools endpoint", async {
            let mut lines = BufReader::new(stderr).lines();
            while let Some(line) = lines.next_line().await.expect("read chromium's stderr") {
                if let Some(url) = line.split("DevTools listening on ws://").nth(1) {
                    let port = url.split(['/', ':']).nth(1).expect("a port").to_owned();
                    // Keep draining stderr so that Chromium never blocks on it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return port.parse::<u16>().expect("a DevTools port");
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await;
        let endpoint = format!("127.0.0.1:{port}").parse().expect("an address");
        // DevTools builds the page's WebSocket URL from this Host.
        let targets = super::get(endpoint, &format!("127.0.0.1:{port}"), "/json/list").await;
        let targets: Value = serde_json::from_slice(&targets.body).expect("DevTools targets");
        let page_url = targets
            .as_array()
            .and_then(|all| all.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            // `localhost` may resolve to ::1, where DevTools does not listen.
            .replace("ws://localhost:", "ws://127.0.0.1:");
        let (page, _) = within(
            "attach to the page",
            tokio_tungstenite::connect_async(page_url),
        )
        .await
        .expect("DevTools WebSocket");
        Browser {
            child,
            page,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page
            .send(Message::text(message))
            .await
            .expect("send to DevTools");
        within(&format!("DevTools {method}"), async {
            loop {
                let message = self
                    .page
                    .next()
                    .await
                    .expect("DevTools open")
                    .expect("a message");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if value["id"] == id {
                    assert!(value.get("error").is_none(), "{method}: {value}");
                    return value["result"].clone();
                }
            }
        })
        .await
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`, within the test's limit.
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        within(what, async {
            while self.eval(expression).await != Value::Bool(true) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// A PNG of the page as it is now.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = result["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG")
    }
}
