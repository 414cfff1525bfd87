//! The one error type at the HTTP edge: a status, a stable code and words for a person.
//! Internal failures are logged with their detail and answered with a bare `internal`.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::accounts::AccountError;
use crate::core::CoreError;
use crate::store::StoreError;

/// An error answer: `{"error": code, "message": message}`.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl AppError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401: not logged in, or wrong credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    /// 403: missing or wrong CSRF token.
    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or invalid CSRF token; reload the page and try again",
        )
    }
    /// 403: the role does not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404: absent, or not yours to know about.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409: taken already.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 410: an invite that cannot be used any more.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", message)
    }
    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed attempts; try again in {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs);
        e
    }
    /// 429 with `Retry-After`: too many sign-ups from this address.
    pub fn rate_limited_signup(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many sign-ups from this address; try again in {retry_after_secs} s"),
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }
    /// 429 without a retry time: a cap on how much one account holds at once.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many", message)
    }
    /// 500; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "something went wrong on the node")
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut res =
            (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict => Self::conflict("that exists already"),
            StoreError::InviteGone => Self::gone("this invite has expired, was used up or was revoked"),
            e => Self::internal(e),
        }
    }
}

impl From<CoreError> for AppError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::BadRequest(m) => Self::bad_request(m),
            CoreError::Forbidden(m) => Self::forbidden(m),
            CoreError::NotFound(m) => Self::not_found(m),
            CoreError::Conflict(m) => Self::conflict(m),
            CoreError::Gone(m) => Self::gone(m),
            CoreError::Store(e) => e.into(),
        }
    }
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::BadName(e) => Self::bad_request(e.to_string()),
            AccountError::BadPassword => Self::bad_request(e.to_string()),
            AccountError::BadDisplayName => Self::bad_request(e.to_string()),
            AccountError::Taken => Self::conflict(e.to_string()),
            AccountError::LinkedElsewhere => Self::conflict(e.to_string()),
            AccountError::SignUpRefused(m) => Self::forbidden(m),
            AccountError::NoSuchUser => Self::not_found(e.to_string()),
            AccountError::WrongCredentials => Self::unauthenticated(e.to_string()),
            AccountError::Store(e) => e.into(),
            AccountError::Hash => Self::internal(e),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let (status, code) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => (status, "too_large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "bad_request"),
            s if s.is_server_error() => return Self::internal(r.body_text()),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with Content-Type: application/json".to_owned()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_owned(),
            _ => r.body_text(),
        };
        Self::new(status, code, message)
    }
}

/// A JSON object body whose rejections are [`AppError`]s, so a bad body gets the same
/// shape as every other error: 400 for syntax, shape and type errors (serde would also
/// take a JSON array for a struct; only objects are accepted), 413 and 415 as usual.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<Value>::from_request(req, state).await?;
        if !value.is_object() {
            return Err(AppError::bad_request("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| AppError::bad_request(format!("invalid request body: {e}")))
    }
}
