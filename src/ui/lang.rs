//! The screen's texts in one language: a table from [`Key`] to text, read from a language file
//! (TOML, one table per screen: `lang/en.toml`, `lang/zh.toml`, both built in).
//!
//! A language file must have every key and no other, and may use in a text only the
//! placeholders its key offers (`{position}`, `{minutes}`...): a kiosk must never show a
//! customer a key name or a half-filled sentence, so a file that breaks these rules is refused
//! when the configuration is loaded, naming the keys.

use std::fmt;

/// English, built in; also the reference for the keys.
pub const EN: &str = include_str!("../../lang/en.toml");
/// Simplified Chinese, built in.
pub const ZH: &str = include_str!("../../lang/zh.toml");
/// The built-in languages: code and file text.
pub const BUILT_IN: [(&str, &str); 2] = [("en", EN), ("zh", ZH)];

macro_rules! keys {
    ($($variant:ident = $name:literal [$($placeholder:literal),*],)*) => {
        /// A text of the screen. `name()` is its dotted name in a language file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Key {
            $($variant,)*
        }

        impl Key {
            pub const ALL: &'static [Key] = &[$(Key::$variant,)*];

            /// `section.key` in the language file.
            pub fn name(self) -> &'static str {
                match self {
                    $(Key::$variant => $name,)*
                }
            }

            /// The placeholders a text of this key may use.
            pub fn placeholders(self) -> &'static [&'static str] {
                match self {
                    $(Key::$variant => &[$($placeholder),*],)*
                }
            }
        }
    };
}

keys! {
    LanguageName = "language.name" [],
    IdleTitle = "idle.title" [],
    IdlePressCall = "idle.press_call" [],
    IdleRecordingNotice = "idle.recording_notice" [],
    IdleOpeningHours = "idle.opening_hours" ["hours"],
    RequestingTitle = "requesting.title" [],
    RequestingBody = "requesting.body" [],
    WaitingTitle = "waiting.title" [],
    WaitingPosition = "waiting.position" ["position"],
    WaitingPositionNext = "waiting.position_next" [],
    WaitingEstimateMinutes = "waiting.estimate_minutes" ["minutes"],
    WaitingEstimateUnderMinute = "waiting.estimate_under_minute" [],
    WaitingEstimateUnknown = "waiting.estimate_unknown" [],
    WaitingCancel = "waiting.cancel" [],
    RingingTitle = "ringing.title" [],
    RingingBody = "ringing.body" [],
    CallAdvisor = "call.advisor" ["name"],
    CallRecorded = "call.recorded" [],
    CallWaitingVideo = "call.waiting_video" [],
    CallVideoPaused = "call.video_paused" [],
    CallHangUp = "call.hang_up" [],
    CallCameraOff = "call.camera_off" [],
    EndedTitle = "ended.title" [],
    EndedThanks = "ended.thanks" [],
    EndedKioskHungUp = "ended.kiosk_hung_up" [],
    EndedAgentHungUp = "ended.agent_hung_up" [],
    EndedAgentLost = "ended.agent_lost" [],
    EndedKioskLost = "ended.kiosk_lost" [],
    EndedInterrupted = "ended.interrupted" [],
    BusyTitle = "busy.title" [],
    BusyBody = "busy.body" [],
    OfflineTitle = "offline.title" [],
    OfflineBody = "offline.body" [],
    OfflineReconnectingTitle = "offline.reconnecting_title" [],
    OfflineReconnectingBody = "offline.reconnecting_body" [],
    TroubleCamera = "trouble.camera" [],
    TroubleMicrophone = "trouble.microphone" [],
    TroubleSpeaker = "trouble.speaker" [],
    TroubleStaff = "trouble.staff" [],
}

/// Why a language file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LangError {
    /// Not TOML, or not tables of strings.
    #[error("not a language file: {0}")]
    Syntax(String),
    /// Keys every language needs are absent.
    #[error("missing keys: {}", .0.join(", "))]
    Missing(Vec<String>),
    /// Keys no screen uses (often a misspelt key).
    #[error("unknown keys: {}", .0.join(", "))]
    Unknown(Vec<String>),
    /// A text names a placeholder its key does not offer.
    #[error("{key}: unknown placeholder {{{placeholder}}} (this text may use: {allowed})")]
    Placeholder { key: String, placeholder: String, allowed: String },
    /// Not one of the built-in languages.
    #[error("unknown language `{0}` (built in: en, zh; or give a language file)")]
    UnknownLanguage(String),
}

/// Every text of the screen in one language.
#[derive(Clone, PartialEq, Eq)]
pub struct Lang {
    /// Indexed by `Key as usize`.
    texts: Vec<String>,
}

impl fmt::Debug for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lang({})", self.text(Key::LanguageName))
    }
}

impl Lang {
    /// A built-in language by its code (`en`, `zh`).
    pub fn built_in(code: &str) -> Result<Self, LangError> {
        let (_, text) = BUILT_IN
            .iter()
            .find(|(c, _)| *c == code)
            .ok_or_else(|| LangError::UnknownLanguage(code.to_string()))?;
        Self::parse(text)
    }

    /// English (the built-in file is checked by the tests, so this cannot fail at run time).
    pub fn english() -> Self {
        Self::parse(EN)
            .unwrap_or_else(|_| Self { texts: Key::ALL.iter().map(|k| k.name().to_string()).collect() })
    }

    /// Reads a language file's text.
    pub fn parse(text: &str) -> Result<Self, LangError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            LangError::Syntax(e.message().lines().next().unwrap_or_default().to_string())
        })?;
        let mut found: Vec<(String, String)> = Vec::new();
        for (section, value) in &table {
            let toml::Value::Table(entries) = value else {
                return Err(LangError::Syntax(format!("`{section}` must be a table of texts")));
            };
            for (key, value) in entries {
                let toml::Value::String(s) = value else {
                    return Err(LangError::Syntax(format!("`{section}.{key}` must be a string")));
                };
                found.push((format!("{section}.{key}"), s.clone()));
            }
        }
        let unknown: Vec<String> = found
            .iter()
            .filter(|(k, _)| !Key::ALL.iter().any(|key| key.name() == k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut texts = Vec::with_capacity(Key::ALL.len());
        let mut missing = Vec::new();
        for key in Key::ALL {
            match found.iter().find(|(k, _)| k == key.name()) {
                Some((_, text)) => {
                    check_placeholders(*key, text)?;
                    texts.push(text.clone());
                }
                None => missing.push(key.name().to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(LangError::Missing(missing));
        }
        if !unknown.is_empty() {
            return Err(LangError::Unknown(unknown));
        }
        Ok(Self { texts })
    }

    /// The text of `key` as written.
    pub fn text(&self, key: Key) -> &str {
        // `texts` has one entry per key, in `Key::ALL` order (checked by `parse`).
        self.texts.get(key as usize).map_or("", String::as_str)
    }

    /// The text of `key` with its placeholders filled in.
    pub fn fill(&self, key: Key, values: &[(&str, &str)]) -> String {
        let mut out = self.text(key).to_string();
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }
}

/// The `{name}`s in `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    out
}

fn check_placeholders(key: Key, text: &str) -> Result<(), LangError> {
    for p in placeholders(text) {
        if !key.placeholders().contains(&p) {
            let allowed = if key.placeholders().is_empty() {
                "none".to_string()
            } else {
                key.placeholders().iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
            };
            return Err(LangError::Placeholder {
                key: key.name().to_string(),
                placeholder: p.to_string(),
                allowed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_language_has_every_key_and_no_other() {
        for (code, text) in BUILT_IN {
            let lang = Lang::parse(text).unwrap_or_else(|e| panic!("lang/{code}.toml: {e}"));
            for key in Key::ALL {
                assert!(!lang.text(*key).trim().is_empty(), "lang/{code}.toml: {} is empty", key.name());
            }
        }
        assert_eq!(Lang::built_in("zh").unwrap().text(Key::LanguageName), "简体中文");
    }

    #[test]
    fn built_in_languages_fill_the_same_placeholders() {
        // A translation may leave a placeholder out, but the built-in ones do not: the customer
        // sees the same facts in every language.
        for key in Key::ALL {
            let en =
                placeholders(Lang::english().text(*key)).into_iter().map(String::from).collect::<Vec<_>>();
            let zh = Lang::built_in("zh").unwrap();
            let zh = placeholders(zh.text(*key)).into_iter().map(String::from).collect::<Vec<_>>();
            assert_eq!(en, zh, "{}", key.name());
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let en = Lang::english();
        assert_eq!(en.fill(Key::WaitingPosition, &[("position", "3")]), "You are number 3 in line");
        let zh = Lang::built_in("zh").unwrap();
        assert_eq!(zh.fill(Key::WaitingEstimateMinutes, &[("minutes", "4")]), "预计等待：约 4 分钟");
    }

    #[test]
    fn a_file_missing_keys_names_them() {
        let text = EN.replace("press_call = ", "# press_call = ").replace("hang_up = ", "hangup = ");
        let err = Lang::parse(&text).unwrap_err();
        assert_eq!(err, LangError::Missing(vec!["idle.press_call".into(), "call.hang_up".into()]));
        assert_eq!(err.to_string(), "missing keys: idle.press_call, call.hang_up");
    }

    #[test]
    fn unknown_keys_and_placeholders_are_refused() {
        let err = Lang::parse(&format!("{EN}\n[extra]\nx = \"y\"\n")).unwrap_err();
        assert_eq!(err, LangError::Unknown(vec!["extra.x".into()]));
        let err = Lang::parse(&EN.replace("{position}", "{place}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "waiting.position: unknown placeholder {place} (this text may use: {position})"
        );
        assert!(matches!(Lang::parse("[idle]\ntitle = 3\n"), Err(LangError::Syntax(_))));
        assert!(matches!(Lang::parse("not toml ["), Err(LangError::Syntax(_))));
        assert_eq!(
            Lang::built_in("fr").unwrap_err().to_string(),
            "unknown language `fr` (built in: en, zh; or give a language file)"
        );
    }
}
