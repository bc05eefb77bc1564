//! The browser console's input from the network: a WebSocket message from the page
//! (`console::web::BrowserMsg::parse`), with the SDP offer it may carry parsed as the hub parses
//! it (str0m), a sign-in body (`SignIn::parse`), and the Cookie and Origin headers.
//!
//! Properties: no panic; what parses is bounded (an SDP offer at most `MAX_SDP` bytes and
//! starting `v=0`; a sign-in name 1 to `MAX_NAME` bytes, a password at most `MAX_PASSWORD`); an
//! agent message that parses passes the protocol's own validation; a cookie value found is a
//! part of the header.
#![no_main]

use kioskd::console::web::{BrowserMsg, MAX_NAME, MAX_PASSWORD, MAX_SDP, SignIn, cookie, same_origin};
use kioskd::roles::hub::console::parse_sdp_offer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SignIn::parse(data) {
        assert!(!s.name.is_empty() && s.name.len() <= MAX_NAME && s.password.len() <= MAX_PASSWORD);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    match BrowserMsg::parse(text) {
        Ok(BrowserMsg::Client(msg)) => assert!(msg.validate().is_ok(), "{msg:?}"),
        Ok(BrowserMsg::SdpOffer(sdp)) => {
            assert!(sdp.len() <= MAX_SDP && sdp.starts_with("v=0"));
            let _ = parse_sdp_offer(&sdp);
        }
        Ok(BrowserMsg::MediaState { .. }) | Err(_) => {}
    }
    // The raw text as an SDP offer too: most inputs never get past the JSON.
    if text.starts_with("v=0") && text.len() <= MAX_SDP {
        let _ = parse_sdp_offer(text);
    }
    if let Some(v) = cookie(text, "kioskd_session") {
        assert!(text.contains(v));
    }
    let (origin, host) = text.split_once('\n').unwrap_or((text, ""));
    let _ = same_origin(Some(origin), Some(host));
});
