//! A headless Chromium driven over the DevTools protocol: the browser console's tests and
//! `kioskd demo --browser` run a real browser, with fake camera and microphone fed from files.
//!
//! ```text
//! Browser::launch(opts) ── chromium --headless=new --remote-debugging-port=0 …
//!                          (its stderr names the DevTools WebSocket)
//!        .open(url)     ── Target.createTarget + attachToTarget (flat session)
//! Page::eval(js)        ── Runtime.evaluate (awaits promises, returns JSON)
//! Page::screenshot()    ── Page.captureScreenshot (PNG)
//! ```
//! Only the hub's own certificate is accepted without a CA the browser knows: its public key's
//! hash is given with `--ignore-certificate-errors-spki-list`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("chromium: {0}")]
    Launch(String),
    #[error("DevTools: {0}")]
    Protocol(String),
    #[error("page script: {0}")]
    Script(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

/// How to start the browser.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// Fake camera: a Y4M file (looped).
    pub video: Option<PathBuf>,
    /// Fake microphone: a WAV file (looped).
    pub audio: Option<PathBuf>,
    /// Base64 SHA-256 of the public key (SPKI) of the one certificate to accept.
    pub trust_spki: Option<String>,
    /// The browser's own profile folder (a temporary one).
    pub profile: PathBuf,
    /// Its home folder, when not the user's: Chromium on Linux takes client certificates from
    /// HOME/.pki/nssdb.
    pub home: Option<PathBuf>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A running headless Chromium.
pub struct Browser {
    child: Child,
    out: mpsc::Sender<String>,
    pending: Pending,
    next: Arc<AtomicU64>,
    /// Console messages and exceptions of the pages (for the test's failure message).
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

/// The chromium binary: `CHROMIUM` or the first of Debian's names found on PATH.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Base64 (standard, padded) of `data`.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The value `--ignore-certificate-errors-spki-list` takes for a certificate (DER).
pub fn spki_hash(cert_der: &[u8]) -> Result<String, BrowserError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| BrowserError::Launch(format!("certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(base64(digest.as_ref()))
}

impl Browser {
    /// Starts Chromium and connects to its DevTools endpoint.
    pub async fn launch(opts: &BrowserOptions) -> Result<Self, BrowserError> {
        let bin = chromium_binary().ok_or_else(|| {
            BrowserError::Launch("not found (install Debian's `chromium`, or set CHROMIUM)".into())
        })?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--window-size=1280,800",
            // A tab the test opens is not in front: it must still render and run at full rate.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
        ]);
        cmd.arg(format!("--user-data-dir={}", opts.profile.display()));
        if let Some(home) = &opts.home {
            cmd.env("HOME", home);
        }
        if let Some(v) = &opts.video {
            cmd.arg(format!("--use-file-for-fake-video-capture={}", v.display()));
        }
        if let Some(a) = &opts.audio {
            cmd.arg(format!("--use-file-for-fake-audio-capture={}", a.display()));
        }
        if let Some(spki) = &opts.trust_spki {
            cmd.arg(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        cmd.arg("about:blank").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| BrowserError::Launch(format!("{}: {e}", bin.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| BrowserError::Launch("no stderr".into()))?;
        // Chromium prints "DevTools listening on ws://…" once its endpoint is up.
        let (url_tx, url_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let mut url_tx = Some(url_tx);
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match tokio::time::timeout(Duration::from_secs(60), url_rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let _ = child.kill();
                return Err(BrowserError::Launch("no DevTools endpoint within 60 s".into()));
            }
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| BrowserError::Protocol(format!("connect {url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<String>(64);
        let pending: Pending = Arc::default();
        let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let (p, l) = (pending.clone(), log.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = p.lock().await.remove(&id) {
                        let r = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                        };
                        let _ = tx.send(r);
                    }
                } else if let Some(line) = page_log(&v)
                    && let Ok(mut l) = l.lock()
                    && l.len() < 1000
                {
                    l.push(line);
                }
            }
        });
        Ok(Self { child, out, pending, next: Arc::new(AtomicU64::new(1)), log })
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, BrowserError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.out
            .send(msg.to_string())
            .await
            .map_err(|_| BrowserError::Protocol("connection closed".into()))?;
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(BrowserError::Protocol(format!("{method}: {e}"))),
            Ok(Err(_)) => Err(BrowserError::Protocol(format!("{method}: connection closed"))),
            Err(_) => Err(BrowserError::Timeout(format!("{method}: no answer in 120 s"))),
        }
    }

    /// Opens a tab at `url`.
    pub async fn open(&self, url: &str) -> Result<Page<'_>, BrowserError> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await?;
        let id = target["targetId"].as_str().ok_or_else(|| BrowserError::Protocol("no targetId".into()))?;
        let attached =
            self.call(None, "Target.attachToTarget", json!({ "targetId": id, "flatten": true })).await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol("no sessionId".into()))?
            .to_string();
        let page = Page { browser: self, session };
        page.call("Runtime.enable", json!({})).await?;
        page.call("Page.enable", json!({})).await?;
        page.call("Page.bringToFront", json!({})).await?;
        page.call("Emulation.setFocusEmulationEnabled", json!({ "enabled": true })).await?;
        page.call("Page.navigate", json!({ "url": url })).await?;
        Ok(page)
    }

    /// What the pages logged (console and exceptions).
    pub fn page_log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn page_log(v: &Value) -> Option<String> {
    match v.get("method")?.as_str()? {
        "Runtime.consoleAPICalled" => {
            let args = v["params"]["args"].as_array()?;
            let text: Vec<String> = args
                .iter()
                .map(|a| a.get("value").map_or_else(|| a["description"].to_string(), |v| v.to_string()))
                .collect();
            Some(format!("console.{}: {}", v["params"]["type"].as_str().unwrap_or("log"), text.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!("exception: {}", v["params"]["exceptionDetails"])),
        _ => None,
    }
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value as JSON.
    pub async fn eval(&self, expr: &str) -> Result<Value, BrowserError> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            let text = e["exception"]["description"].as_str().map_or_else(|| e.to_string(), str::to_string);
            return Err(BrowserError::Script(text));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Waits until `cond` (a JS expression) is true in the page, checking it at each
    /// animation frame, within `timeout`.
    pub async fn wait_for(&self, what: &str, cond: &str, timeout: Duration) -> Result<(), BrowserError> {
        let ms = timeout.as_millis();
        let js = format!(
            "new Promise((ok, no) => {{ const end = setTimeout(() => no(new Error('timeout')), {ms}); \
             const check = () => {{ let v = false; try {{ v = !!({cond}); }} catch (e) {{}} \
             if (v) {{ clearTimeout(end); ok(true); }} else {{ setTimeout(check, 16); }} }}; check(); }})"
        );
        match self.eval(&js).await {
            Ok(_) => Ok(()),
            Err(BrowserError::Script(e)) if e.contains("timeout") => {
                Err(BrowserError::Timeout(format!("{what} ({cond}) within {timeout:?}")))
            }
            Err(e) => Err(e),
        }
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" })).await?;
        let data = r["data"].as_str().ok_or_else(|| BrowserError::Protocol("no screenshot".into()))?;
        unbase64(data).ok_or_else(|| BrowserError::Protocol("screenshot not base64".into()))
    }
}

/// A Y4M of `frames` stamped test pictures (frame numbers from 1; the stamp's time is 0, as
/// the browser plays the file in a loop), for Chromium's fake camera.
pub fn write_stamped_y4m(
    path: &std::path::Path,
    width: u32,
    height: u32,
    frames: u32,
) -> std::io::Result<()> {
    use crate::edges::devices::camera::synthetic::{stamp, test_pattern};
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg")?;
    for n in 1..=frames {
        let mut pic = test_pattern(width, height, n, 0);
        stamp(&mut pic, n, 0);
        f.write_all(b"FRAME\n")?;
        f.write_all(&pic.data)?;
    }
    f.flush()
}

/// A mono 48 kHz 16-bit WAV of a tone, for Chromium's fake microphone.
pub fn write_tone_wav(path: &std::path::Path, hz: f64, seconds: u32) -> std::io::Result<()> {
    let rate = crate::media::SAMPLE_RATE;
    let n = rate * seconds;
    let mut out = Vec::with_capacity(44 + n as usize * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + n * 2).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for v in [16u32.to_le_bytes().as_slice(), &1u16.to_le_bytes(), &1u16.to_le_bytes()] {
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(n * 2).to_le_bytes());
    for i in 0..n {
        let s = (f64::from(i) * hz * std::f64::consts::TAU / f64::from(rate)).sin() * 0.3;
        out.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(path, out)
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (raw, enc) in
            [(&b""[..], ""), (b"f", "Zg=="), (b"fo", "Zm8="), (b"foo", "Zm9v"), (b"foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(raw), enc);
            assert_eq!(unbase64(enc).as_deref(), Some(raw));
        }
        assert_eq!(unbase64("Zm9v!"), None);
    }
}
