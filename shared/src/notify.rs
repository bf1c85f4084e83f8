//! DLR FL Demonstrator notifications (protocols.md §2): types, parsing and
//! validation, reference status codes, and the encoder of the exact bodies
//! the DLR server sends.
//!
//! The server POSTs one JSON object per notification:
//!
//! ```text
//! {"notification_type": "UPDATE_ROUND_START", "body": {"round": 0, "global_model_uuid": "…"}, "training_uuid": "…"}
//! ```
//!
//! [`parse`] turns raw request bytes into a typed [`Notification`], or a
//! [`ParseError`] that tells an unknown `notification_type` apart from a
//! malformed body. UUIDs are accepted in the forms Python's `uuid.UUID`
//! takes and stored in canonical form (lowercase, hyphenated).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::training::Phase;

/// The `notification_type` values of the DLR server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationType {
    TrainingStart,
    UpdateRoundStart,
    ModelTestRound,
    SwagRoundStart,
    TrainingFinished,
    /// In the server's enum but never sent by it; accepted anyway.
    ClientRemoved,
}

impl NotificationType {
    pub const ALL: [NotificationType; 6] = [
        NotificationType::TrainingStart,
        NotificationType::UpdateRoundStart,
        NotificationType::ModelTestRound,
        NotificationType::SwagRoundStart,
        NotificationType::TrainingFinished,
        NotificationType::ClientRemoved,
    ];

    /// The wire name, e.g. `"TRAINING_START"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::TrainingStart => "TRAINING_START",
            NotificationType::UpdateRoundStart => "UPDATE_ROUND_START",
            NotificationType::ModelTestRound => "MODEL_TEST_ROUND",
            NotificationType::SwagRoundStart => "SWAG_ROUND_START",
            NotificationType::TrainingFinished => "TRAINING_FINISHED",
            NotificationType::ClientRemoved => "CLIENT_REMOVED",
        }
    }

    /// The type named `s` on the wire (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<NotificationType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The status the reference client answers with: 200 for start,
    /// finished and client-removed, 202 (work started in the background)
    /// for the round notifications.
    pub fn reference_status(self) -> u16 {
        match self {
            NotificationType::UpdateRoundStart
            | NotificationType::ModelTestRound
            | NotificationType::SwagRoundStart => 202,
            NotificationType::TrainingStart
            | NotificationType::TrainingFinished
            | NotificationType::ClientRemoved => 200,
        }
    }

    /// The round phase this type starts, for the three round types.
    pub fn phase(self) -> Option<Phase> {
        match self {
            NotificationType::UpdateRoundStart => Some(Phase::Update),
            NotificationType::ModelTestRound => Some(Phase::Test),
            NotificationType::SwagRoundStart => Some(Phase::Swag),
            _ => None,
        }
    }

    /// The type that starts `phase`.
    pub fn of_phase(phase: Phase) -> NotificationType {
        match phase {
            Phase::Update => NotificationType::UpdateRoundStart,
            Phase::Test => NotificationType::ModelTestRound,
            Phase::Swag => NotificationType::SwagRoundStart,
        }
    }
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a notification says, beyond which training it is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// TRAINING_START.
    Start { global_model_uuid: String },
    /// UPDATE_ROUND_START, MODEL_TEST_ROUND or SWAG_ROUND_START.
    Round {
        phase: Phase,
        round: u32,
        global_model_uuid: String,
    },
    /// TRAINING_FINISHED.
    Finished { global_model_uuid: String },
    /// CLIENT_REMOVED (its body, if any, is not interpreted).
    ClientRemoved,
}

/// One validated notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Canonical form (lowercase, hyphenated).
    pub training_uuid: String,
    pub kind: Kind,
}

impl Notification {
    pub fn start(training_uuid: impl Into<String>, global_model_uuid: impl Into<String>) -> Self {
        Notification {
            training_uuid: training_uuid.into(),
            kind: Kind::Start {
                global_model_uuid: global_model_uuid.into(),
            },
        }
    }

    pub fn round(
        training_uuid: impl Into<String>,
        phase: Phase,
        round: u32,
        global_model_uuid: impl Into<String>,
    ) -> Self {
        Notification {
            training_uuid: training_uuid.into(),
            kind: Kind::Round {
                phase,
                round,
                global_model_uuid: global_model_uuid.into(),
            },
        }
    }

    pub fn finished(
        training_uuid: impl Into<String>,
        global_model_uuid: impl Into<String>,
    ) -> Self {
        Notification {
            training_uuid: training_uuid.into(),
            kind: Kind::Finished {
                global_model_uuid: global_model_uuid.into(),
            },
        }
    }

    pub fn client_removed(training_uuid: impl Into<String>) -> Self {
        Notification {
            training_uuid: training_uuid.into(),
            kind: Kind::ClientRemoved,
        }
    }

    pub fn notification_type(&self) -> NotificationType {
        match &self.kind {
            Kind::Start { .. } => NotificationType::TrainingStart,
            Kind::Round { phase, .. } => NotificationType::of_phase(*phase),
            Kind::Finished { .. } => NotificationType::TrainingFinished,
            Kind::ClientRemoved => NotificationType::ClientRemoved,
        }
    }

    /// The reference client's status for this notification.
    pub fn reference_status(&self) -> u16 {
        self.notification_type().reference_status()
    }

    /// The round, for round notifications.
    pub fn round_number(&self) -> Option<u32> {
        match &self.kind {
            Kind::Round { round, .. } => Some(*round),
            _ => None,
        }
    }

    /// The phase, for round notifications.
    pub fn phase(&self) -> Option<Phase> {
        match &self.kind {
            Kind::Round { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// The `global_model_uuid` of the body, where the type carries one.
    pub fn global_model_uuid(&self) -> Option<&str> {
        match &self.kind {
            Kind::Start { global_model_uuid }
            | Kind::Round {
                global_model_uuid, ..
            }
            | Kind::Finished { global_model_uuid } => Some(global_model_uuid),
            Kind::ClientRemoved => None,
        }
    }

    /// The request body exactly as the DLR server sends it (Python's
    /// `json.dumps` layout and key order):
    /// `{"notification_type": "…", "body": {…}, "training_uuid": "…"}`.
    /// CLIENT_REMOVED, which the server never sends, gets `"body": {}`.
    pub fn to_json(&self) -> String {
        fn s(v: &str) -> String {
            // Serializing a str cannot fail.
            serde_json::to_string(v).unwrap_or_default()
        }
        let body = match &self.kind {
            Kind::Start { global_model_uuid } | Kind::Finished { global_model_uuid } => {
                format!("{{\"global_model_uuid\": {}}}", s(global_model_uuid))
            }
            Kind::Round {
                round,
                global_model_uuid,
                ..
            } => format!(
                "{{\"round\": {round}, \"global_model_uuid\": {}}}",
                s(global_model_uuid)
            ),
            Kind::ClientRemoved => "{}".to_owned(),
        };
        format!(
            "{{\"notification_type\": \"{}\", \"body\": {body}, \"training_uuid\": {}}}",
            self.notification_type().as_str(),
            s(&self.training_uuid)
        )
    }
}

/// Why a request body is not a notification we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or JSON but not an object.
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// A required field is absent (or `null`). The name is a path such as
    /// `body.round`.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong JSON type or an invalid value.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// A well-formed `notification_type` this protocol does not know (the
    /// name is cut to 64 characters).
    #[error("unknown notification_type {0:?}")]
    UnknownType(String),
}

impl ParseError {
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, ParseError::UnknownType(_))
    }
}

/// Longest unknown type name kept in [`ParseError::UnknownType`].
const MAX_TYPE_ECHO: usize = 64;

/// Parses and validates a notification from the raw request body.
pub fn parse(bytes: &[u8]) -> Result<Notification, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(ParseError::Malformed(
            "the body must be a JSON object".into(),
        ));
    };
    let type_name = string_field(&top, "notification_type", "notification_type")?;
    let Some(ntype) = NotificationType::parse(type_name) else {
        return Err(ParseError::UnknownType(
            type_name.chars().take(MAX_TYPE_ECHO).collect(),
        ));
    };
    let training_uuid = uuid_field(&top, "training_uuid", "training_uuid")?;
    let body = match top.get("body") {
        None | Some(Value::Null) => return Err(ParseError::Missing("body")),
        Some(Value::Object(b)) => b,
        Some(_) => {
            return Err(ParseError::WrongType {
                field: "body",
                expected: "an object",
            })
        }
    };
    let kind = match ntype {
        NotificationType::TrainingStart => Kind::Start {
            global_model_uuid: uuid_field(body, "global_model_uuid", "body.global_model_uuid")?,
        },
        NotificationType::TrainingFinished => Kind::Finished {
            global_model_uuid: uuid_field(body, "global_model_uuid", "body.global_model_uuid")?,
        },
        NotificationType::UpdateRoundStart
        | NotificationType::ModelTestRound
        | NotificationType::SwagRoundStart => {
            let round = match body.get("round") {
                None | Some(Value::Null) => return Err(ParseError::Missing("body.round")),
                Some(Value::Number(n)) => n.as_u64().and_then(|r| u32::try_from(r).ok()),
                Some(_) => None,
            }
            .ok_or(ParseError::WrongType {
                field: "body.round",
                expected: "an integer from 0 to 4294967295",
            })?;
            Kind::Round {
                phase: ntype.phase().unwrap_or(Phase::Update),
                round,
                global_model_uuid: uuid_field(body, "global_model_uuid", "body.global_model_uuid")?,
            }
        }
        NotificationType::ClientRemoved => Kind::ClientRemoved,
    };
    Ok(Notification {
        training_uuid,
        kind,
    })
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &'static str,
) -> Result<&'a str, ParseError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(ParseError::Missing(path)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ParseError::WrongType {
            field: path,
            expected: "a string",
        }),
    }
}

fn uuid_field(
    obj: &Map<String, Value>,
    key: &str,
    path: &'static str,
) -> Result<String, ParseError> {
    let s = string_field(obj, key, path)?;
    canonical_uuid(s).ok_or(ParseError::WrongType {
        field: path,
        expected: "a UUID",
    })
}

/// `s` in canonical UUID form (lowercase `8-4-4-4-12` hex), if it is a UUID
/// in a form Python's `uuid.UUID(s)` accepts: 32 hex digits, with hyphens
/// anywhere, optionally in braces and after `urn:uuid:`.
pub fn canonical_uuid(s: &str) -> Option<String> {
    if s.len() > 64 {
        return None;
    }
    let s = s.strip_prefix("urn:").unwrap_or(s);
    let s = s.strip_prefix("uuid:").unwrap_or(s);
    let s = s.trim_matches(|c| c == '{' || c == '}');
    let mut hex = [0u8; 32];
    let mut n = 0;
    for c in s.bytes() {
        if c == b'-' {
            continue;
        }
        if !c.is_ascii_hexdigit() || n == 32 {
            return None;
        }
        hex[n] = c.to_ascii_lowercase();
        n += 1;
    }
    if n != 32 {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, c) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(char::from(*c));
    }
    Some(out)
}

/// Formats 16 random bytes as a version-4 (random) UUID. The caller brings
/// the randomness; this crate does no I/O.
pub fn uuid_v4_from_bytes(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0e5ac2a4-58a6-4d8a-9c3b-6f3f2f1a0b7e";
    const M: &str = "5b8f2c1e-3d4a-4e6b-8f7a-1c2d3e4f5a6b";

    fn body(ntype: &str, inner: &str) -> String {
        format!(r#"{{"notification_type": "{ntype}", "training_uuid": "{T}", "body": {inner}}}"#)
    }

    #[test]
    fn parses_the_five_reference_bodies_with_their_statuses() {
        let cases = [
            (
                body(
                    "TRAINING_START",
                    &format!(r#"{{"global_model_uuid": "{M}"}}"#),
                ),
                Notification::start(T, M),
                200,
            ),
            (
                body(
                    "UPDATE_ROUND_START",
                    &format!(r#"{{"round": 0, "global_model_uuid": "{M}"}}"#),
                ),
                Notification::round(T, Phase::Update, 0, M),
                202,
            ),
            (
                body(
                    "MODEL_TEST_ROUND",
                    &format!(r#"{{"round": 1, "global_model_uuid": "{M}"}}"#),
                ),
                Notification::round(T, Phase::Test, 1, M),
                202,
            ),
            (
                body(
                    "SWAG_ROUND_START",
                    &format!(r#"{{"round": 3, "global_model_uuid": "{M}"}}"#),
                ),
                Notification::round(T, Phase::Swag, 3, M),
                202,
            ),
            (
                body(
                    "TRAINING_FINISHED",
                    &format!(r#"{{"global_model_uuid": "{M}"}}"#),
                ),
                Notification::finished(T, M),
                200,
            ),
            (
                body("CLIENT_REMOVED", "{}"),
                Notification::client_removed(T),
                200,
            ),
        ];
        for (raw, expected, status) in cases {
            let n = parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(n, expected);
            assert_eq!(n.reference_status(), status, "{raw}");
        }
    }

    #[test]
    fn encoder_matches_the_dlr_server_byte_for_byte() {
        assert_eq!(
            Notification::round(T, Phase::Update, 0, M).to_json(),
            format!(
                r#"{{"notification_type": "UPDATE_ROUND_START", "body": {{"round": 0, "global_model_uuid": "{M}"}}, "training_uuid": "{T}"}}"#
            )
        );
        assert_eq!(
            Notification::start(T, M).to_json(),
            format!(
                r#"{{"notification_type": "TRAINING_START", "body": {{"global_model_uuid": "{M}"}}, "training_uuid": "{T}"}}"#
            )
        );
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let all = [
            Notification::start(T, M),
            Notification::round(T, Phase::Update, 0, M),
            Notification::round(T, Phase::Test, u32::MAX, M),
            Notification::round(T, Phase::Swag, 7, M),
            Notification::finished(T, M),
            Notification::client_removed(T),
        ];
        for n in all {
            assert_eq!(parse(n.to_json().as_bytes()), Ok(n.clone()), "{n:?}");
        }
    }

    #[test]
    fn unknown_type_is_told_apart() {
        let e = parse(body("MODEL_DELETED", "{}").as_bytes()).unwrap_err();
        assert_eq!(e, ParseError::UnknownType("MODEL_DELETED".into()));
        assert!(e.is_unknown_type());
        // Case matters on the wire.
        assert!(parse(body("training_start", "{}").as_bytes())
            .unwrap_err()
            .is_unknown_type());
        // A huge name is not echoed whole.
        let long = "X".repeat(10_000);
        match parse(body(&long, "{}").as_bytes()).unwrap_err() {
            ParseError::UnknownType(n) => assert_eq!(n.len(), MAX_TYPE_ECHO),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_missing_and_wrong_types() {
        use ParseError::*;
        let m = format!(r#""global_model_uuid": "{M}""#);
        let cases: Vec<(String, ParseError)> = vec![
            ("".into(), Malformed(String::new())),
            ("{".into(), Malformed(String::new())),
            ("[1,2]".into(), Malformed(String::new())),
            ("\"TRAINING_START\"".into(), Malformed(String::new())),
            (
                format!(r#"{{"training_uuid": "{T}", "body": {{}}}}"#),
                Missing("notification_type"),
            ),
            (
                r#"{"notification_type": 3}"#.into(),
                WrongType {
                    field: "notification_type",
                    expected: "a string",
                },
            ),
            (
                format!(r#"{{"notification_type": "TRAINING_START", "body": {{{m}}}}}"#),
                Missing("training_uuid"),
            ),
            (
                format!(
                    r#"{{"notification_type": "TRAINING_START", "training_uuid": 5, "body": {{{m}}}}}"#
                ),
                WrongType {
                    field: "training_uuid",
                    expected: "a string",
                },
            ),
            (
                format!(
                    r#"{{"notification_type": "TRAINING_START", "training_uuid": "nope", "body": {{{m}}}}}"#
                ),
                WrongType {
                    field: "training_uuid",
                    expected: "a UUID",
                },
            ),
            (
                format!(r#"{{"notification_type": "TRAINING_START", "training_uuid": "{T}"}}"#),
                Missing("body"),
            ),
            (
                format!(
                    r#"{{"notification_type": "TRAINING_START", "training_uuid": "{T}", "body": null}}"#
                ),
                Missing("body"),
            ),
            (
                body("TRAINING_START", "[]"),
                WrongType {
                    field: "body",
                    expected: "an object",
                },
            ),
            (
                body("TRAINING_START", "{}"),
                Missing("body.global_model_uuid"),
            ),
            (
                body("TRAINING_FINISHED", r#"{"global_model_uuid": "x"}"#),
                WrongType {
                    field: "body.global_model_uuid",
                    expected: "a UUID",
                },
            ),
            (
                body("UPDATE_ROUND_START", &format!("{{{m}}}")),
                Missing("body.round"),
            ),
            (
                body("UPDATE_ROUND_START", r#"{"round": 1}"#),
                Missing("body.global_model_uuid"),
            ),
        ];
        for (raw, expected) in cases {
            let got = parse(raw.as_bytes()).unwrap_err();
            match (&got, &expected) {
                (Malformed(_), Malformed(_)) => {}
                _ => assert_eq!(got, expected, "{raw}"),
            }
            assert!(!got.to_string().is_empty());
        }
    }

    #[test]
    fn round_must_be_a_non_negative_u32_integer() {
        for bad in [
            "-1",
            "1.5",
            "1.0",
            "\"3\"",
            "true",
            "4294967296",
            "1e3",
            "[]",
        ] {
            let raw = body(
                "MODEL_TEST_ROUND",
                &format!(r#"{{"round": {bad}, "global_model_uuid": "{M}"}}"#),
            );
            assert_eq!(
                parse(raw.as_bytes()),
                Err(ParseError::WrongType {
                    field: "body.round",
                    expected: "an integer from 0 to 4294967295"
                }),
                "round {bad}"
            );
        }
        let raw = body(
            "SWAG_ROUND_START",
            &format!(r#"{{"round": 4294967295, "global_model_uuid": "{M}"}}"#),
        );
        assert_eq!(
            parse(raw.as_bytes()).unwrap().round_number(),
            Some(u32::MAX)
        );
    }

    #[test]
    fn extra_fields_are_ignored_and_uuids_canonicalised() {
        let raw = format!(
            r#"{{"notification_type": "UPDATE_ROUND_START", "training_uuid": "{{{}}}", "body": {{"round": 2, "global_model_uuid": "{}", "extra": [1]}}, "x": 1}}"#,
            T.to_uppercase(),
            M.replace('-', "")
        );
        let n = parse(raw.as_bytes()).unwrap();
        assert_eq!(n, Notification::round(T, Phase::Update, 2, M));
        assert_eq!(n.global_model_uuid(), Some(M));
        assert_eq!(n.phase(), Some(Phase::Update));
    }

    #[test]
    fn canonical_uuid_forms() {
        assert_eq!(canonical_uuid(T).as_deref(), Some(T));
        assert_eq!(
            canonical_uuid(&format!("urn:uuid:{}", T.to_uppercase())).as_deref(),
            Some(T)
        );
        assert_eq!(canonical_uuid(&T.replace('-', "")).as_deref(), Some(T));
        for bad in [
            "",
            "xyz",
            &T[..35],
            &format!("{T}0"),
            &T.replace('a', "g"),
            "-".repeat(100).as_str(),
        ] {
            assert_eq!(canonical_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn v4_uuids_are_canonical_and_versioned() {
        let u = uuid_v4_from_bytes([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(canonical_uuid(&u), Some(u.clone()));
        let z = uuid_v4_from_bytes([0; 16]);
        assert_eq!(z, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn type_names_round_trip() {
        for t in NotificationType::ALL {
            assert_eq!(NotificationType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::from(t.as_str())
            );
            if let Some(p) = t.phase() {
                assert_eq!(NotificationType::of_phase(p), t);
            }
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn arb_notification() -> impl Strategy<Value = Notification> {
            let uuid = any::<[u8; 16]>().prop_map(uuid_v4_from_bytes);
            (0..6usize, uuid.clone(), uuid, any::<u32>()).prop_map(|(k, t, m, r)| match k {
                0 => Notification::start(t, m),
                1 => Notification::round(t, Phase::Update, r, m),
                2 => Notification::round(t, Phase::Test, r, m),
                3 => Notification::round(t, Phase::Swag, r, m),
                4 => Notification::finished(t, m),
                _ => Notification::client_removed(t),
            })
        }

        proptest! {
            #[test]
            fn encoded_notifications_parse_back(n in arb_notification()) {
                prop_assert_eq!(parse(n.to_json().as_bytes()), Ok(n));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(&bytes);
            }

            #[test]
            fn damaged_bodies_are_errors_not_panics(n in arb_notification(), cut in 0usize..200) {
                let json = n.to_json();
                let cut = cut.min(json.len().saturating_sub(1));
                prop_assert!(parse(&json.as_bytes()[..cut]).is_err());
            }
        }
    }
}
