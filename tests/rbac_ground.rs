//! The ground every grant stands on, shown on the real API server: a
//! ServiceAccount token minted with TokenRequest authenticates, is forbidden
//! before a RoleBinding exists and allowed once it does, and stops
//! authenticating after its ServiceAccount is deleted.
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use support::{Cluster, TestNamespace};

fn status_code(result: &Result<impl Sized, kube::Error>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(s.code),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn token_authenticates_and_rbac_decides() {
    let cluster = Cluster::shared();
    let admin = cluster.admin();
    let ns = TestNamespace::create(&admin, cluster, "rbac-ground").await;
    let token = support::service_account_token(&admin, &ns.name, "agent").await;
    let agent = cluster.client_with_token(&token);

    // Authenticated as the ServiceAccount.
    let review = Api::<SelfSubjectReview>::all(agent.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let username = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(username.as_deref(), Some(format!("system:serviceaccount:{}:agent", ns.name).as_str()));

    // Forbidden before any binding.
    let pods: Api<Pod> = Api::namespaced(agent.clone(), &ns.name);
    assert_eq!(status_code(&pods.list(&ListParams::default()).await), Some(403));

    // Allowed once bound to `view` in the namespace.
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("agent-view".into()), ..ObjectMeta::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "view".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "agent".into(),
            namespace: Some(ns.name.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create rolebinding");
    let bound = Instant::now();
    assert!(
        support::eventually(Duration::from_secs(30), || async { pods.list(&ListParams::default()).await.is_ok() })
            .await,
        "binding did not take effect within 30 s"
    );
    eprintln!("rbac: binding → allowed in {:?}", bound.elapsed());

    // Still forbidden out of scope: another namespace, another verb.
    let elsewhere: Api<Pod> = Api::namespaced(agent.clone(), "default");
    assert_eq!(status_code(&elsewhere.list(&ListParams::default()).await), Some(403));
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    assert_eq!(status_code(&pods.create(&PostParams::default(), &pod).await), Some(403));

    // Deleting the ServiceAccount ends authentication (after the API server's
    // short cache of successful authentications).
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete serviceaccount");
    let deleted = Instant::now();
    assert!(
        support::eventually(Duration::from_secs(30), || async {
            status_code(&pods.list(&ListParams::default()).await) == Some(401)
        })
        .await,
        "token still authenticates 30 s after its ServiceAccount was deleted"
    );
    eprintln!("rbac: serviceaccount deleted → 401 in {:?}", deleted.elapsed());
}
