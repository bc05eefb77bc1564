//! The browser console in a real headless Chromium: an advisor signs in, goes IDLE, takes a
//! kiosk's call and talks to the customer over WebRTC through the hub; the kiosk runs its real
//! driver over real QUIC with the synthetic camera and microphone. Chromium's fake camera and
//! microphone play files this test makes: stamped pictures (the kiosk reads the stamps) and a
//! 660 Hz tone.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::browser::{Browser, BrowserOptions, Page, spki_hash, write_stamped_y4m, write_tone_wav};
use kioskd::edges::devices::audio::dominant_frequency;
use kioskd::edges::session::{MediaOptions, MediaStats, synthetic_devices};
use kioskd::media::SAMPLE_RATE;
use kioskd::media::codec::VideoSettings;
use kioskd::protocol::Role;
use kioskd::queue::QueueConfig;
use kioskd::roles::hub::console::{Accounts, ConsoleOptions};
use kioskd::roles::hub::{self, HubOptions};
use kioskd::roles::kiosk::KioskEvent;
use serde_json::Value;

/// Generous: Chromium starts slowly on a loaded 2-core machine.
const PAGE_WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "advisor password 1";
/// One Chromium at a time: each call in a browser takes most of a core of this 2-core machine
/// (the tests of this file would otherwise run two at once and starve each other's media).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The browser's camera file: 10 s at 30 fps, played in a loop.
const CAMERA_FILE_FRAMES: u32 = 300;

fn video() -> VideoSettings {
    VideoSettings { width: 320, height: 240, fps: 30.0, bitrate_bps: 400_000, ..VideoSettings::default() }
}

/// The page's WebRTC statistics (inbound and outbound RTP), for failure messages and figures.
const RTP_STATS: &str = "(typeof pc !== 'undefined' && pc ? pc.getStats() : Promise.resolve(new Map())).then(r => { \
    const o = []; r.forEach(s => { if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') o.push({ type: s.type, \
    kind: s.kind, packets: s.packetsReceived ?? s.packetsSent, lost: s.packetsLost, frames: s.framesDecoded ?? s.framesEncoded, \
    dropped: s.framesDropped, samples: s.totalSamplesReceived, concealed: s.concealedSamples, level: s.audioLevel, \
    fps: s.framesPerSecond, plis: s.pliCount, nacks: s.nackCount }); }); return JSON.stringify(o); })";

async fn eval(page: &Page<'_>, js: &str) -> Value {
    page.eval(js).await.unwrap_or_else(|e| panic!("{js}: {e}"))
}

async fn wait(page: &Page<'_>, browser: &Browser, what: &str, cond: &str) {
    if let Err(e) = page.wait_for(what, cond, PAGE_WAIT).await {
        let state = page
            .eval("JSON.stringify([window.kioskd && window.kioskd.state(), window.kioskd && window.kioskd.video()])")
            .await;
        let rtp = page.eval(RTP_STATS).await;
        panic!("{e}\nstate: {state:?}\nRTP: {rtp:?}\npage log:\n{}", browser.page_log().join("\n"));
    }
}

/// A screenshot of the page compared with tests/snapshots/console-NAME.png as the kiosk's
/// screen snapshots are (a pixel differs when a channel is off by more than 24; at most 1 % of
/// them may: fonts and anti-aliasing move edge pixels, never a layout).
/// `KIOSKD_UPDATE_SNAPSHOTS=1` rewrites the references; a failure writes what was seen to
/// target/snapshots/console-NAME.png.
async fn snapshot(page: &Page<'_>, name: &str) {
    use kioskd::ui::{Frame, Rgb};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = root.join("tests/snapshots").join(format!("console-{name}.png"));
    let png = page.screenshot().await.expect("screenshot");
    if std::env::var_os("KIOSKD_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&reference, &png).unwrap();
        return;
    }
    let seen_path = root.join("target/snapshots").join(format!("console-{name}.png"));
    let fail = |why: String| -> ! {
        let _ = std::fs::create_dir_all(seen_path.parent().unwrap());
        let _ = std::fs::write(&seen_path, &png);
        panic!(
            "console snapshot {name}: {why}\n  reference: {}\n  seen: {}",
            reference.display(),
            seen_path.display()
        );
    };
    let seen = Frame::from_png(&png).unwrap_or_else(|e| fail(format!("screenshot unreadable: {e}")));
    let want = match std::fs::read(&reference).map(|b| Frame::from_png(&b)) {
        Ok(Ok(f)) => f,
        other => fail(format!("no usable reference: {:?}", other.err())),
    };
    if (want.width, want.height) != (seen.width, seen.height) {
        fail(format!("size {}x{}, reference {}x{}", seen.width, seen.height, want.width, want.height));
    }
    let differing = seen
        .pixels
        .iter()
        .zip(&want.pixels)
        .filter(|(a, b)| {
            let (a, b) = (Rgb(**a), Rgb(**b));
            a.r().abs_diff(b.r()) > 24 || a.g().abs_diff(b.g()) > 24 || a.b().abs_diff(b.b()) > 24
        })
        .count();
    let share = differing as f64 / seen.pixels.len() as f64;
    if share > 0.01 {
        fail(format!("{differing} pixels ({:.2} %) differ, at most 1 % may", share * 100.0));
    }
}

/// Holds the page still for a snapshot: its transitions (buttons fading in, the offer's
/// progress bar) finished, its animations (the ringing pulse) at their start and, with `videos`, the live pictures hidden (their content
/// differs from run to run; the frame around them, the texts and the buttons do not).
async fn still(page: &Page<'_>, videos: bool) {
    let hide = if videos {
        "document.querySelectorAll('video').forEach(v => v.style.visibility = 'hidden');"
    } else {
        ""
    };
    eval(
        page,
        &format!("{hide} document.getAnimations().forEach(a => {{ if (a instanceof CSSTransition) a.finish(); else {{ a.pause(); a.currentTime = 0; }} }}); true"),
    )
    .await;
}

async fn kiosk_media(k: &mut TestKiosk) -> MediaStats {
    match k.wait_for("media figures", |e| matches!(e, KioskEvent::Media { .. })).await {
        KioskEvent::Media { stats, .. } => *stats,
        _ => unreachable!(),
    }
}

/// A hub with the console (the advisor alice), and a Chromium trusting the hub's certificate
/// with its camera and microphone playing the stamped pictures and the 660 Hz tone.
async fn hub_and_browser(dir: &Path, pki: &Pki) -> (hub::RunningHub, Browser) {
    let tls = pki.material(Role::Hub, "hub.test");
    let spki = spki_hash(&tls.chain[0]).unwrap();
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let hub = console_hub(dir, tls, local, None).await;
    (hub, browser_with_media(dir, spki).await)
}

/// A Chromium trusting the hub's certificate (`spki`), its camera and microphone playing the
/// stamped pictures and the 660 Hz tone.
async fn browser_with_media(dir: &Path, spki: String) -> Browser {
    let (y4m, wav) = (dir.join("advisor.y4m"), dir.join("advisor.wav"));
    write_stamped_y4m(&y4m, 640, 480, CAMERA_FILE_FRAMES).unwrap();
    write_tone_wav(&wav, 660.0, 20).unwrap();
    Browser::launch(&BrowserOptions {
        video: Some(y4m),
        audio: Some(wav),
        trust_spki: Some(spki),
        profile: dir.join("chromium"),
        home: None,
    })
    .await
    .expect("chromium starts")
}

/// A new kiosk `id` calls; the page, IDLE, accepts; the kiosk is in the call.
async fn kiosk_calls_the_page(
    page: &Page<'_>,
    browser: &Browser,
    pki: &Pki,
    hub: &hub::RunningHub,
    id: &str,
) -> TestKiosk {
    let mut k = start_kiosk(pki, hub.local_addr, id);
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    wait(page, browser, "the offer", "window.kioskd.state().offer !== null").await;
    eval(page, "window.kioskd.accept()").await;
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    k
}

/// A hub with the console (the advisor alice) and the hub certificate `tls`, its WebRTC media
/// on `media`, told to browsers as `public` (when given).
async fn console_hub(
    dir: &Path,
    tls: kioskd::edges::net::tls::TlsMaterial,
    media: SocketAddr,
    public: Option<SocketAddr>,
) -> hub::RunningHub {
    let accounts = dir.join("accounts.toml");
    Accounts::set(&accounts, "alice", PASSWORD, false).unwrap();
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    hub::start(HubOptions {
        listen: local,
        tls,
        // A wrap-up after each call, long enough for its screenshot.
        queue: QueueConfig { wrap_up: Duration::from_secs(4), ..QueueConfig::default() },
        event_log: dir.join("events.jsonl"),
        metrics: None,
        recording: None,
        crl: None,
        admission: Default::default(),
        renewal: None,
        database: None,
        console: Some(ConsoleOptions {
            listen: local,
            media,
            media_public: public,
            accounts,
            session_ttl: Duration::from_secs(3600),
            media_grace: kioskd::roles::hub::console::DEFAULT_MEDIA_GRACE,
        }),
    })
    .await
    .expect("hub starts")
}

/// Signs alice in and sets her IDLE.
async fn sign_in_idle(page: &Page<'_>, browser: &Browser) {
    wait(page, browser, "the console script", "window.kioskd && window.kioskd.state()").await;
    eval(page, &format!("window.kioskd.signIn('alice', '{PASSWORD}')")).await;
    wait(page, browser, "signed in", "window.kioskd.state().signedIn && window.kioskd.state().ws === 'open'")
        .await;
    eval(page, "window.kioskd.setPresence('idle')").await;
    wait(page, browser, "IDLE", "window.kioskd.state().room === 'idle'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_vanishes_mid_call_ends_the_call_and_frees_the_room() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (hub, browser) = hub_and_browser(dir.path(), &pki).await;
    let console = hub.console_addrs.expect("console");
    let page = browser.open(&format!("https://127.0.0.1:{}/", console.https.port())).await.unwrap();
    sign_in_idle(&page, &browser).await;
    let mut k = kiosk_calls_the_page(&page, &browser, &pki, &hub, "branch-1/kiosk-2").await;
    drop(page);
    let killed = std::time::Instant::now();
    drop(browser); // killed: no close, no goodbye
    k.wait_state("the call's end", |s| !matches!(s, KioskState::Connected { .. })).await;
    let ended = killed.elapsed();
    let mut status = hub.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.snapshot.calls_connected == 0 && s.connections == 1))
        .await
        .expect("no call left and only the kiosk connected")
        .expect("the hub runs");
    eprintln!("browser killed mid-call: the kiosk's call ended {} ms later", ended.as_millis());
    assert!(ended <= Duration::from_secs(12), "the call outlived its browser by {ended:?}");
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap_or_default();
    assert!(
        // Killed, Chromium's network process may still close the page's connection.
        events.lines().any(|l| l.contains(r#""event":"browser_lost""#)
            && (l.contains("broke off") || l.contains("was closed"))),
        "no browser_lost line in the event log:\n{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisor_in_a_browser_sees_hears_and_texts_the_customer() {
    let _one = ONE_BROWSER.lock().await;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (hub, browser) = hub_and_browser(dir.path(), &pki).await;
    let console = hub.console_addrs.expect("console");
    let page = browser.open(&format!("https://127.0.0.1:{}/", console.https.port())).await.unwrap();
    wait(&page, &browser, "the console script", "window.kioskd && window.kioskd.state()").await;
    wait(&page, &browser, "the sign-in form", "document.body.dataset.view === 'signin'").await;
    snapshot(&page, "signin-en").await;
    eval(&page, "document.getElementById('lang-toggle').click()").await;
    wait(&page, &browser, "Chinese", "document.body.dataset.lang === 'zh'").await;
    eval(&page, "document.fonts.ready.then(() => true)").await;
    snapshot(&page, "signin-zh").await;
    eval(&page, "document.getElementById('lang-toggle').click()").await;
    wait(&page, &browser, "English", "document.body.dataset.lang === 'en'").await;

    // A wrong password is refused; the right one signs in.
    let refused = eval(&page, "window.kioskd.signIn('alice', 'not the password').then(r => r)").await;
    assert_ne!(refused, Value::Bool(true), "a wrong password signed in: {refused}");
    eval(&page, &format!("window.kioskd.signIn('alice', '{PASSWORD}')")).await;
    wait(
        &page,
        &browser,
        "signed in",
        "window.kioskd.state().signedIn && window.kioskd.state().ws === 'open'",
    )
    .await;
    wait(&page, &browser, "CLOSE", "window.kioskd.state().room === 'close'").await;
    still(&page, false).await;
    snapshot(&page, "close-en").await;
    eval(&page, "window.kioskd.setPresence('idle')").await;
    wait(&page, &browser, "IDLE", "window.kioskd.state().room === 'idle'").await;
    snapshot(&page, "idle-en").await;

    let mut k = start_kiosk_full(
        &pki,
        hub.local_addr,
        "branch-1/kiosk-1",
        synthetic_devices(440.0, video()),
        MediaOptions { video: video(), ..MediaOptions::default() },
        vec![],
    );
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    wait(&page, &browser, "the offer", "window.kioskd.state().offer !== null").await;
    still(&page, false).await;
    snapshot(&page, "offer-en").await;
    eval(&page, "window.kioskd.accept()").await;
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    wait(&page, &browser, "connected", "window.kioskd.state().connected").await;

    // Pictures from the kiosk, read from the page's decoded frames.
    wait(&page, &browser, "200 verified kiosk pictures", "window.kioskd.video().verified >= 200").await;
    // Texts both ways.
    eval(&page, "window.kioskd.sendText('Good morning, how can I help?')").await;
    let got = k.wait_for("the advisor's text", |e| matches!(e, KioskEvent::TextReceived { .. })).await;
    let KioskEvent::TextReceived { body, .. } = got else { unreachable!() };
    assert_eq!(body, "Good morning, how can I help?");
    k.texts.send("I would like to open an account".into()).await.unwrap();
    wait(
        &page,
        &browser,
        "the customer's text",
        "window.kioskd.state().texts.some(t => t.from === 'peer' && t.body === 'I would like to open an account')",
    )
    .await;
    wait(
        &page,
        &browser,
        "the delivery mark",
        "window.kioskd.state().texts.some(t => t.from === 'me' && t.delivered)",
    )
    .await;
    // Sound from the kiosk reaches the page.
    wait(&page, &browser, "the kiosk's tone", "window.kioskd.audio().samples >= 20").await;
    let shot = page.screenshot().await.unwrap();
    // For a person to look at (target/browser-console/call.png).
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-console");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("call.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "the screenshot is not a PNG");

    let video = eval(&page, "window.kioskd.video()").await;
    let audio = eval(&page, "window.kioskd.audio()").await;
    still(&page, true).await;
    snapshot(&page, "call-en").await;
    eval(&page, "window.kioskd.hangUp()").await;
    let kiosk = kiosk_media(&mut k).await;
    wait(&page, &browser, "the call's end", "!window.kioskd.state().connected").await;
    wait(&page, &browser, "WRAP-UP", "window.kioskd.state().room === 'wrap_up'").await;
    still(&page, false).await;
    snapshot(&page, "wrapup-en").await;
    wait(&page, &browser, "IDLE after the wrap-up", "window.kioskd.state().room === 'idle'").await;

    // Kiosk → browser.
    let verified = video["verified"].as_u64().unwrap_or(0);
    let presented = video["presented"].as_u64().unwrap_or(0);
    assert!(video["out_of_order"].as_u64() == Some(0), "{video}");
    let repeated = video["repeated"].as_u64().unwrap_or(0);
    assert!(
        verified * 100 >= (presented - repeated) * 99,
        "{verified} of {presented} pictures verified: {video}"
    );
    let hz = audio["dominant_hz_median"].as_f64().unwrap_or(0.0);
    assert!((hz - 440.0).abs() < 15.0, "the page heard {hz} Hz: {audio}");
    // Browser → kiosk: pictures (their stamps, in order) and the tone.
    assert!(
        kiosk.video_frames_decoded >= 30,
        "the kiosk decoded {} browser pictures",
        kiosk.video_frames_decoded
    );
    // The browser's camera plays the file in a loop: its stamps name frame numbers, not the
    // capture times the hub can know; the kiosk reads them from every picture it decodes.
    // In order, but for the file starting over.
    let n = &kiosk.stamped_frame_numbers;
    let looped = |a: u32, b: u32| a + 15 >= CAMERA_FILE_FRAMES && b < 15;
    assert!(
        n.len() >= 30 && n.windows(2).all(|w| w[0] < w[1] || looped(w[0], w[1])),
        "browser pictures missing or out of order: {n:?}"
    );
    // The browser's bandwidth estimate of the hub → browser leg reached the kiosk's rate control.
    assert!(kiosk.rate_hints_received >= 1, "no rate hint from the browser's leg reached the kiosk");
    // The browser's keyframe requests (its decoder starts on the first frames it gets, and asks
    // with a PLI) reached the kiosk's encoder.
    assert!(kiosk.keyframes_asked >= 1, "no keyframe request from the browser reached the kiosk");
    let played: Vec<i16> = kiosk.played_audio.iter().copied().collect();
    let f = dominant_frequency(&played, SAMPLE_RATE);
    assert!((f - 660.0).abs() < 660.0 * 0.02, "the kiosk heard {f:.1} Hz from the browser");
    let mut lat: Vec<i64> =
        video["latencies_ms"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
    lat.sort_unstable();
    let p95 = lat.get(lat.len() * 95 / 100).copied().unwrap_or(-1);
    eprintln!(
        "browser console call: kiosk→browser {verified}/{presented} pictures verified ({repeated} repeated), \
         capture to page p95 {p95} ms; browser→kiosk {} pictures decoded, stamps in order; \
         page heard {hz:.0} Hz, kiosk heard {f:.0} Hz; {} rate hints from the browser's estimate, {} keyframes asked",
        kiosk.video_frames_decoded, kiosk.rate_hints_received, kiosk.keyframes_asked
    );
}

#[test]
fn the_browser_demo_measures_both_directions() {
    let _one = ONE_BROWSER.blocking_lock();
    let out = kioskd_bin(&["demo", "--browser", "--json", "--call-duration-ms", "4000"]);
    let text = output_text(&out);
    assert!(out.status.success(), "kioskd demo --browser failed:\n{text}");
    let json: Value =
        serde_json::from_str(text.lines().rev().find(|l| l.starts_with('{')).expect("JSON line")).unwrap();
    assert_eq!(json["agent"], "browser");
    for dir in ["kiosk_to_agent", "agent_to_kiosk"] {
        let d = &json[dir];
        assert!(d["video_frames_verified"].as_u64().unwrap_or(0) >= 60, "{dir}: {d}");
        assert_eq!(d["video_frames_out_of_order"], 0, "{dir}: {d}");
    }
    for dir in ["kiosk_to_agent", "agent_to_kiosk"] {
        assert!(json[dir]["video_latency_ms"]["p95"].as_f64().is_some_and(|ms| ms > 0.0), "{dir}: {json}");
    }
    assert!(json["hub_cpu"]["core_per_call"].as_f64().is_some_and(|c| c > 0.0), "{json}");
    assert!(text.contains("kiosk → browser") && text.contains("browser → kiosk"), "{text}");
}

/// Chromium's managed policy that makes it present its client certificate to one site (a
/// headless browser has no dialog to pick one); removed when dropped.
struct CertificatePolicy(std::path::PathBuf);

impl CertificatePolicy {
    /// Needs root (the policy folder is /etc/chromium/policies/managed); `None` otherwise.
    fn for_site(origin: &str) -> Option<Self> {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).ok()?;
        let path = dir.join(format!("kioskd-test-{}.json", std::process::id()));
        let rule = serde_json::json!({ "pattern": origin, "filter": {} }).to_string();
        let policy = serde_json::json!({ "AutoSelectCertificateForUrls": [rule] });
        std::fs::write(&path, policy.to_string()).ok()?;
        Some(CertificatePolicy(path))
    }
}

impl Drop for CertificatePolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(cmd: &str, args: &[&str]) {
    let o = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs (scripts/deps.sh installs it): {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", output_text(&o));
}

/// An advisor whose browser holds their agent certificate (in its NSS store, as Chromium on
/// Linux keeps them) is signed in by it when the page opens: no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_holding_an_agent_certificate_is_signed_in_by_it() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    deployment(d); // kioskd certs: the CA, hub.test, agent-1
    let file = |name: &str| d.join(name).to_str().expect("utf-8").to_string();
    let tls = kioskd::edges::net::tls::TlsMaterial::load(
        &d.join("ca.pem"),
        &d.join("hub.test.pem"),
        &d.join("hub.test.key"),
    )
    .unwrap();
    let spki = spki_hash(&tls.chain[0]).unwrap();
    let hub = console_hub(d, tls, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).await;
    let https = hub.console_addrs.expect("console").https;
    let origin = format!("https://127.0.0.1:{}", https.port());
    let Some(_policy) = CertificatePolicy::for_site(&origin) else {
        eprintln!("skipped: setting Chromium's AutoSelectCertificateForUrls policy needs root");
        return;
    };
    // The agent's certificate and key into the browser's store.
    let home = d.join("home");
    let nssdb = format!("sql:{}", home.join(".pki/nssdb").display());
    std::fs::create_dir_all(home.join(".pki/nssdb")).unwrap();
    run("certutil", &["-N", "-d", &nssdb, "--empty-password"]);
    let p12 = file("agent-1.p12");
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            &file("agent-1.pem"),
            "-inkey",
            &file("agent-1.key"),
            "-out",
            &p12,
            "-passout",
            "pass:",
        ],
    );
    run("pk12util", &["-i", &p12, "-d", &nssdb, "-W", ""]);

    let browser = Browser::launch(&BrowserOptions {
        video: None,
        audio: None,
        trust_spki: Some(spki),
        profile: d.join("chromium"),
        home: Some(home),
    })
    .await
    .expect("chromium starts");
    let page = browser.open(&format!("{origin}/")).await.unwrap();
    wait(&page, &browser, "the console script", "window.kioskd && window.kioskd.state()").await;
    wait(
        &page,
        &browser,
        "signed in by the certificate",
        "window.kioskd.state().signedIn && window.kioskd.state().ws === 'open'",
    )
    .await;
    assert_eq!(eval(&page, "window.kioskd.state().agent").await, "agent-1");
    eval(&page, "window.kioskd.setPresence('idle')").await;
    wait(&page, &browser, "IDLE", "window.kioskd.state().room === 'idle'").await;
    let events = std::fs::read_to_string(d.join("events.jsonl")).unwrap_or_default();
    assert!(
        events.lines().any(|l| l.contains(r#""event":"sign_in""#)
            && l.contains("certificate")
            && l.contains("agent-1")),
        "no certificate sign-in in the event log:\n{events}"
    );
    hub.shutdown().await;
}

/// The browser's media reaches the hub through a lossy path (a user-space UDP proxy, 8 % of
/// the browser's packets lost once the call is up): NACKs recover most, and the frames still
/// missing make the hub ask the browser for a keyframe (PLI), so that the kiosk's picture
/// recovers; the browser's pictures reach the kiosk in order throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_path_from_the_browser_makes_the_hub_ask_it_for_keyframes() {
    use kioskd::edges::netsim::{Direction, UdpProxy};
    use kioskd::netsim::LinkConfig;
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    // The hub's media port, chosen first: the proxy relays to it and browsers are told the
    // proxy's address.
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy =
        UdpProxy::start("127.0.0.1:0".parse().unwrap(), media, LinkConfig::default(), LinkConfig::default())
            .await
            .unwrap();
    let tls = pki.material(Role::Hub, "hub.test");
    let spki = spki_hash(&tls.chain[0]).unwrap();
    let hub = console_hub(dir.path(), tls, media, Some(proxy.local_addr())).await;
    let browser = browser_with_media(dir.path(), spki).await;
    let console = hub.console_addrs.expect("console");
    let page = browser.open(&format!("https://127.0.0.1:{}/", console.https.port())).await.unwrap();
    sign_in_idle(&page, &browser).await;
    let mut k = kiosk_calls_the_page(&page, &browser, &pki, &hub, "branch-1/kiosk-4").await;
    // This kiosk sends no media of its own: the browser's connection is what is waited for.
    wait(
        &page,
        &browser,
        "WebRTC through the proxy",
        "typeof pc !== 'undefined' && pc && pc.connectionState === 'connected'",
    )
    .await;
    assert!(
        proxy.stats().clients >= 1,
        "the browser's media does not go through the proxy: {:?}",
        proxy.stats()
    );

    // The PLIs the browser's video sender received, read from its statistics five times a second.
    eval(
        &page,
        "window.plis = 0; window.sent = 0; setInterval(() => pc && pc.getStats().then(r => r.forEach(s => { \
         if (s.type === 'outbound-rtp' && s.kind === 'video') { window.plis = s.pliCount ?? 0; window.sent = s.framesEncoded ?? 0; window.polled = true; } })), 200); true",
    )
    .await;
    wait(&page, &browser, "the browser's statistics", "window.polled === true").await;
    let before = eval(&page, "window.plis").await.as_u64().unwrap_or(0);
    proxy.set_config(Direction::Up, LinkConfig { loss: 0.08, seed: 7, ..LinkConfig::default() }).unwrap();
    wait(&page, &browser, "a keyframe request from the hub", &format!("window.plis > {before}")).await;
    let asked = eval(&page, "window.plis").await.as_u64().unwrap_or(0) - before;
    proxy.set_config(Direction::Up, LinkConfig::default()).unwrap();
    // Three more seconds of the browser's pictures on a clean path.
    let sent = eval(&page, "window.sent").await.as_u64().unwrap_or(0);
    wait(&page, &browser, "90 more pictures", &format!("window.sent >= {}", sent + 90)).await;
    eval(&page, "window.kioskd.hangUp()").await;
    let kiosk = kiosk_media(&mut k).await;
    let n = &kiosk.stamped_frame_numbers;
    let looped = |a: u32, b: u32| a + 15 >= CAMERA_FILE_FRAMES && b < 15;
    assert!(
        n.len() >= 30 && n.windows(2).all(|w| w[0] < w[1] || looped(w[0], w[1])),
        "browser pictures missing or out of order after the losses: {n:?}"
    );
    eprintln!(
        "lossy browser path: {asked} keyframe requests (PLI) from the hub, {} browser pictures decoded in order, {:?}",
        kiosk.video_frames_decoded,
        proxy.stats()
    );
}
