//! What every cluster-facing command needs: a client from the kubeconfig, who
//! the API server says we are (SelfSubjectReview), and where requests live.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::{Client, Config};

use super::CliError;
use crate::names;

/// `userInfo.extra` keys of a pod-bound ServiceAccount token.
/// Source: <https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens>
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// A connected session.
pub struct Session {
    pub client: Client,
    pub config: Config,
    /// Username as the API server authenticated it.
    pub user: String,
    pub groups: Vec<String>,
    /// The Pod of a pod-bound token (`authentication.kubernetes.io/pod-name`,
    /// `pod-uid`, `node-name` in the review's `extra`): name, uid, node.
    pub pod: Option<(String, String, Option<String>)>,
}

impl Session {
    /// Connects with the current kubeconfig (or in-cluster config) and asks the
    /// API server who we are.
    pub async fn connect() -> Result<Session, CliError> {
        let config = Config::infer().await.map_err(|e| CliError::bad_input(format!("no usable kubeconfig: {e}")))?;
        let client = Client::try_from(config.clone()).map_err(|e| CliError::cluster(format!("client: {e}")))?;
        let review = Api::<SelfSubjectReview>::all(client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| CliError::cluster(format!("asking the API server who you are (SelfSubjectReview): {e}")))?;
        let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
        let extra = info.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
        let pod = match (first(POD_NAME), first(POD_UID)) {
            (Some(name), Some(uid)) => Some((name, uid, first(NODE_NAME))),
            _ => None,
        };
        Ok(Session {
            client,
            config,
            user: info.username.unwrap_or_default(),
            groups: info.groups.unwrap_or_default(),
            pod,
        })
    }

    /// Where requests are made and read: `--in` if given; else the requester's
    /// own namespace when it is a ServiceAccount; else the kubeconfig's namespace.
    pub fn request_namespace(&self, explicit: Option<&str>) -> String {
        if let Some(ns) = explicit {
            return ns.to_string();
        }
        match names::parse_service_account_username(&self.user) {
            Some((ns, _)) => ns.to_string(),
            None => self.config.default_namespace.clone(),
        }
    }
}
