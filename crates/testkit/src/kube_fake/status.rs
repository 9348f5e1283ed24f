//! The fake API server's failures, answered as the real one answers them: a `kind: Status`
//! body with `status: Failure`, a `reason`, the HTTP `code` and `details` naming the object
//! (the shapes are checked against recordings in `recorded.rs`).

use serde_json::{Value, json};

/// Which object a failure is about, for `details`: most reasons name the plural (the
/// "qualified resource"), `Invalid` names the `kind` (the "qualified kind"), as the real
/// server's `NewInvalid` does.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    pub group: String,
    pub plural: String,
    pub kind: String,
    pub name: String,
}

impl Subject {
    /// `Secret` for the core group, `FooBar.example.com` otherwise.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn kind_details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.kind });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }

    /// `secrets` for the core group, `servicesclaims.meshwork.dev` otherwise: the
    /// "qualified resource" the real server's messages name.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.plural });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

/// One field a write gets wrong, as a cause of the real server's 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, …
    pub reason: &'static str,
    /// `Required value`, `Invalid value: 70000: …`, …
    pub message: String,
    /// `spec.ports[0].port`.
    pub field: String,
}

impl Cause {
    /// A cause.
    pub(crate) fn new(reason: &'static str, field: &str, message: impl Into<String>) -> Cause {
        Cause {
            reason,
            message: message.into(),
            field: field.to_owned(),
        }
    }
}

/// The real server's message for a list of causes: `f: m` for one, `[f: m, g: n]` for more.
pub(crate) fn summary(causes: &[Cause]) -> String {
    let each: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    match each.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", each.join(", ")),
    }
}

/// One failure of the fake API server, with the real server's reason and code.
#[derive(Debug, Clone)]
pub(crate) enum FakeStatus {
    /// 404: no such object.
    NotFound(Subject),
    /// 404: no such path or resource type.
    NoRoute,
    /// 409: `create` of a name that exists.
    AlreadyExists(Subject),
    /// 409: a stale `metadata.resourceVersion` or a failed delete precondition.
    Conflict(Subject, String),
    /// 422: a JSON Patch that does not apply (e.g. a failed `test`), as the real server
    /// words it (a generic "rejected" message, the patch error as a cause).
    Rejected(String),
    /// 422: the object is not acceptable (e.g. a new finalizer on an object being deleted):
    /// the subject, the summary of the causes, the causes.
    Invalid(Box<Subject>, String, Box<Value>),
    /// 400: a malformed request.
    BadRequest(String),
    /// 405: a verb the path does not serve.
    MethodNotAllowed,
    /// 410: a list from a `resourceVersion` older than the fake's history (on a watch this is
    /// sent as an `ERROR` event instead).
    Expired(String),
    /// 415: a patch content type the fake does not know.
    UnsupportedMediaType(String),
    /// 401: no or a wrong bearer token.
    Unauthorized,
}

impl FakeStatus {
    /// The HTTP status code.
    pub(crate) fn code(&self) -> u16 {
        match self {
            FakeStatus::NotFound(_) | FakeStatus::NoRoute => 404,
            FakeStatus::AlreadyExists(_) | FakeStatus::Conflict(..) => 409,
            FakeStatus::Invalid(..) | FakeStatus::Rejected(_) => 422,
            FakeStatus::BadRequest(_) => 400,
            FakeStatus::MethodNotAllowed => 405,
            FakeStatus::Expired(_) => 410,
            FakeStatus::UnsupportedMediaType(_) => 415,
            FakeStatus::Unauthorized => 401,
        }
    }

    /// The `kind: Status` body.
    pub(crate) fn body(&self) -> Value {
        let (reason, message, details) = self.parts();
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": self.code(),
        });
        if let Some(details) = details {
            body["details"] = details;
        }
        body
    }

    /// `reason`, `message` and `details`, worded as the real server words them.
    fn parts(&self) -> (&'static str, String, Option<Value>) {
        match self {
            FakeStatus::NotFound(s) => (
                "NotFound",
                format!("{} \"{}\" not found", s.qualified(), s.name),
                Some(s.details()),
            ),
            FakeStatus::NoRoute => (
                "NotFound",
                "the server could not find the requested resource".to_owned(),
                None,
            ),
            FakeStatus::AlreadyExists(s) => (
                "AlreadyExists",
                format!("{} \"{}\" already exists", s.qualified(), s.name),
                Some(s.details()),
            ),
            FakeStatus::Conflict(s, why) => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    s.qualified(),
                    s.name
                ),
                Some(s.details()),
            ),
            FakeStatus::Invalid(s, why, causes) => {
                let mut details = s.kind_details();
                details["causes"] = (**causes).clone();
                (
                    "Invalid",
                    format!("{} \"{}\" is invalid: {why}", s.qualified_kind(), s.name),
                    Some(details),
                )
            }
            FakeStatus::Rejected(why) => (
                "Invalid",
                "the server rejected our request due to an error in our request".to_owned(),
                Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": why}]})),
            ),
            FakeStatus::BadRequest(why) => ("BadRequest", why.clone(), None),
            FakeStatus::MethodNotAllowed => (
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_owned(),
                None,
            ),
            FakeStatus::Expired(why) => ("Expired", why.clone(), None),
            FakeStatus::UnsupportedMediaType(why) => ("UnsupportedMediaType", why.clone(), None),
            FakeStatus::Unauthorized => ("Unauthorized", "Unauthorized".to_owned(), None),
        }
    }
}

impl FakeStatus {
    /// 422 `Invalid` about `subject` for `causes` (at least one).
    pub(crate) fn invalid(subject: Subject, causes: &[Cause]) -> FakeStatus {
        let json = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        FakeStatus::Invalid(
            Box::new(subject),
            summary(causes),
            Box::new(Value::Array(json)),
        )
    }
}

/// The `kind: Status` of a successful immediate delete (the real server answers a custom
/// resource's delete with this, not with the object).
pub(crate) fn deleted(subject: &Subject, uid: &str) -> Value {
    let mut details = subject.details();
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

/// The status a watch sends as an `ERROR` event when it starts from a `resourceVersion`
/// older than the history: `too old resource version: <asked> (<oldest kept>)`.
pub(crate) fn too_old(asked: u64, oldest: u64) -> Value {
    FakeStatus::Expired(format!("too old resource version: {asked} ({oldest})")).body()
}
