//! The library's error type. `metric_label` names each variant the same way
//! in metrics, Events and logs.

/// Everything that can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serialisation: {0}")]
    Serde(#[source] serde_json::Error),
    #[error("grant plan: {0}")]
    Plan(#[source] crate::grant::plan::PlanError),
    #[error("the request has no {0}")]
    MissingField(&'static str),
    #[error("TokenRequest returned no token")]
    NoToken,
    #[error("HTTP endpoint: {0}")]
    Http(#[source] std::io::Error),
    #[error("Deployment {deployment} still has Pods after {waited_secs}s at 0 replicas: {pods}")]
    OperatorStillRunning { deployment: String, waited_secs: u64, pods: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What a user should read: the API server's own message where there is one.
    pub fn user_message(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether trying again later may succeed: the API server was unreachable,
    /// overloaded (429), failing (5xx, such as etcd being unavailable) or the
    /// object changed underneath (409). Anything else is a real refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.code == 409 || s.code == 429 || s.code >= 500,
            Error::Kube(_) => true,
            _ => false,
        }
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serde(_) => "serde",
            Error::Plan(_) => "plan",
            Error::MissingField(_) => "missing_field",
            Error::NoToken => "no_token",
            Error::Http(_) => "http",
            Error::OperatorStillRunning { .. } => "operator_still_running",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serde(e)
    }
}

impl From<crate::grant::plan::PlanError> for Error {
    fn from(e: crate::grant::plan::PlanError) -> Self {
        Error::Plan(e)
    }
}
