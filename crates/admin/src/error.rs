//! The error answer of every admin route: an HTTP status and a JSON body
//! `{"error": "<message>"}`, with `"kafka_error": "<NAME>"` when the
//! broker refused a write with a Kafka error. Handlers return `Result<_, AdminError>`; an
//! extractor's refusal (a bad path parameter, a body that is not the JSON
//! asked for or is past the body limit) converts with `?` and keeps its
//! status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An admin request that failed: answered with `status` and
/// `{"error": message}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    status: StatusCode,
    message: String,
    /// The Kafka error the broker answered, by Kafka's name
    /// (`TOPIC_ALREADY_EXISTS`), for a write the broker refused; the body
    /// then carries it as `kafka_error`.
    kafka_error: Option<String>,
}

impl AdminError {
    /// An answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kafka_error: None,
        }
    }

    /// The same answer, naming the Kafka error (`TOPIC_ALREADY_EXISTS`) the
    /// broker refused with in the body's `kafka_error`.
    pub fn with_kafka_error(mut self, name: impl Into<String>) -> Self {
        self.kafka_error = Some(name.into());
        self
    }

    /// 400: the request cannot be served as asked.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: what the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Kafka's name of the error the broker refused with, if it did.
    pub fn kafka_error(&self) -> Option<&str> {
        self.kafka_error.as_deref()
    }
}

/// The body of an error answer.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_error: Option<&'a str>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "admin request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
                kafka_error: self.kafka_error.as_deref(),
            }),
        )
            .into_response()
    }
}

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for AdminError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_answers_its_status_and_a_json_body() {
        let response = AdminError::not_found("no topic \"t\"").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body, serde_json::json!({"error": "no topic \"t\""}));
    }
}
