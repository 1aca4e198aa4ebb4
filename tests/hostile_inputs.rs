//! Hostile inputs, table-driven, against a real control plane and the real
//! operator binary (never mocks). Every row names its input and its exact
//! outcome: rejected at admission (HTTP code and message), denied by the
//! operator (reason and message), failed closed, granted (only where the
//! input is odd but legitimate), or — for approvals — without effect.
//!
//! One dedicated cluster and one operator serve the whole table; each row has
//! its own request name, and policies have distinct subjects so rows cannot
//! influence one another.
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::{Value, json};
use support::Cluster;
use support::operator::Operator;
use support::scenario::{self, Agent};

/// Where every request lives.
const NS: &str = "agents";
/// How long the operator may take to settle any one request.
const SETTLE: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------- the table

/// Who creates the request, and what it says about who asks.
#[derive(Clone)]
enum Requester {
    /// `spec.requester.user` is the creator (what an honest client sends).
    Creator,
    /// No `spec.requester` at all.
    Omit,
    /// Derived from the creator's username (spoofing rows).
    Derived(fn(&str) -> Value),
}

#[derive(Clone)]
enum Input {
    /// An AccessRequest created by identity `by` in namespace `ns`.
    Request {
        by: &'static str,
        ns: &'static str,
        name: String,
        requester: Requester,
        spec: Value,
        status: Option<Value>,
    },
    /// Another kubejit.io object created by identity `by` (`ns` None: cluster-scoped).
    Object { by: &'static str, kind: &'static str, ns: Option<&'static str>, body: Value },
    /// Several steps; see [`run_scenario`].
    Scenario(Scenario),
}

/// Multi-step rows; the approval ones use `waiter` under `p-manual` (two approvals
/// needed from alice, bob or the group jit-approvers).
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// The requester approves its own request (admitted: approver == creator), then alice.
    SelfApproval,
    /// mallory (may create approvals, not named by the policy) approves, then alice.
    StrangerApproval,
    /// alice approves twice.
    DoubleApproval,
    /// alice approves a request of that name from another namespace, then bob here.
    OtherNamespaceApproval,
    /// alice approves a name a second before the request exists, then bob.
    PreApproval,
    /// alice and carol (a member of jit-approvers, claiming it) approve.
    GroupApproval,
    /// alice approves, bob denies.
    DenyByApprover,
    /// Denied by bob; the denial is deleted and alice and bob approve.
    ApproveDenied,
    /// Granted for 3 s, expired, then approved again.
    ApproveExpired,
    /// Granted, then the requester patches its spec (request name, patch).
    EditAfterApproval(&'static str, fn() -> Value),
    /// Granted, revoked, then `revoke: false`.
    Unrevoke,
    /// Granted, deleted, re-created under the same name a second later.
    ReusedName,
    /// An admin edits an existing approval.
    ApprovalEdited,
    /// The requester writes its own request's status.
    StatusSelfWrite,
    /// `limited` (maxLiveGrantsPerSubject 1) asks again while its first grant is live.
    LiveGrantLimit,
    /// A role the policy lists but the cluster lacks.
    DanglingRole(&'static str, &'static str),
    /// Known bug: concurrent requests all pass `maxLiveGrantsPerSubject`.
    Burst,
    /// Known bug: approvals of a deleted request count for its same-second successor.
    SameSecondReuse,
    /// Known bug: approvals made in the second before the request existed count.
    SameSecondPreApproval,
}

#[derive(Clone, Debug)]
enum Expect {
    /// Refused by the API server: HTTP code and a substring of its message.
    Rejected(u16, &'static str),
    /// Ended `Denied`: the Denied condition's reason and a substring of its message.
    Denied(&'static str, String),
    /// Ended `Failed`, nothing left granted: reason and message substring.
    Failed(&'static str, &'static str),
    /// Ended `Revoked` without ever being granted: reason and message substring.
    Revoked(&'static str, &'static str),
    /// Granted under `policy`; `lasts`: the grant's length in seconds.
    Granted { policy: &'static str, lasts: Option<i64> },
    /// Still waiting for approvals, with exactly these approvers counted.
    Pending(&'static [&'static str]),
    /// A terminal request the hostile approvals did not change.
    Unchanged(Phase),
}

#[derive(Clone)]
struct Row {
    name: String,
    input: Input,
    expect: Expect,
}

fn base_spec() -> Value {
    json!({"role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"], "duration": "5m",
           "purpose": "hostile-input suite"})
}

/// `base_spec()` with `over` merged in; a `null` in `over` removes the field.
fn spec(over: Value) -> Value {
    let mut s = base_spec();
    for (k, v) in over.as_object().expect("object") {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    s
}

/// Overrides asking for inline `rules` instead of a role.
fn rules(r: Value) -> Value {
    json!({"role": null, "rules": r})
}

/// A request by the main agent `hostile`.
fn ask(name: &str, over: Value, expect: Expect) -> Row {
    ask_as("hostile", name, over, expect)
}

fn ask_as(by: &'static str, name: &str, over: Value, expect: Expect) -> Row {
    Row {
        name: name.to_string(),
        input: Input::Request {
            by,
            ns: NS,
            name: name.to_string(),
            requester: Requester::Creator,
            spec: spec(over),
            status: None,
        },
        expect,
    }
}

/// A request whose metadata.name differs from the row name.
fn ask_named(row: &str, request_name: String, over: Value, expect: Expect) -> Row {
    let mut r = ask(row, over, expect);
    if let Input::Request { name, .. } = &mut r.input {
        *name = request_name;
    }
    r
}

fn ask_with_requester(name: &str, requester: Requester, over: Value, expect: Expect) -> Row {
    let mut r = ask(name, over, expect);
    if let Input::Request { requester: q, .. } = &mut r.input {
        *q = requester;
    }
    r
}

fn object(name: &str, by: &'static str, kind: &'static str, ns: Option<&'static str>, body: Value, e: Expect) -> Row {
    Row { name: name.to_string(), input: Input::Object { by, kind, ns, body }, expect: e }
}

fn scenario(name: &str, s: Scenario, expect: Expect) -> Row {
    Row { name: name.to_string(), input: Input::Scenario(s), expect }
}

fn schema(message: &'static str) -> Expect {
    Expect::Rejected(422, message)
}

fn forbidden(message: &'static str) -> Expect {
    Expect::Rejected(403, message)
}

fn no_policy(message: impl Into<String>) -> Expect {
    Expect::Denied("NoPolicyAllows", message.into())
}

fn invalid(message: impl Into<String>) -> Expect {
    Expect::Denied("InvalidRequest", message.into())
}

fn granted(policy: &'static str) -> Expect {
    Expect::Granted { policy, lasts: None }
}

const BAD_DURATION: &str = "duration must look like 90s, 15m or 1h30m";
const NOT_PLAIN: &str = "purpose must be plain text: no control, zero-width or bidirectional-override characters";
const SPOOFED_USER: &str = "spec.requester.user must be the identity creating the request";
const SPOOFED_GROUPS: &str = "spec.requester.groups may only list groups the creating identity belongs to";
const NAME_RULES: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters";
const NS_PATTERN: &str = "in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'";

/// A 253-character request name (the most Kubernetes allows) with dots and dashes.
fn longest_name() -> String {
    let mut name = String::from("long-");
    while name.len() < 253 {
        name.push_str("a1b2.c3-d4");
    }
    name.truncate(252);
    while !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        name.pop();
    }
    while name.len() < 253 {
        name.push('z');
    }
    assert_eq!(name.len(), 253);
    name
}

fn rows() -> Vec<Row> {
    let approval = |request: &str, decision: &str, approver: &str, groups: Value, reason: &str| {
        json!({"metadata": {"generateName": "hostile-"}, "spec": {"request": request, "decision": decision,
               "approver": approver, "groups": groups, "reason": reason}})
    };
    let policy = |over: Value| {
        let mut p = json!({"subjects": {"users": ["nobody-at-all"]},
                           "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}}});
        for (k, v) in over.as_object().unwrap() {
            p[k] = v.clone();
        }
        json!({"metadata": {"generateName": "hostile-"}, "spec": p})
    };
    let many_namespaces: Vec<String> = (0..65).map(|i| format!("ns-{i}")).collect();
    let too_many_rules: Vec<Value> =
        (0..33).map(|_| json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})).collect();

    vec![
        // --- durations
        ask("duration-zero", json!({"duration": "0s"}), schema("duration must be more than zero")),
        ask("duration-zero-every-unit", json!({"duration": "0h0m0s"}), schema("duration must be more than zero")),
        ask("duration-negative", json!({"duration": "-5m"}), schema(BAD_DURATION)),
        ask("duration-fraction", json!({"duration": "1.5h"}), schema(BAD_DURATION)),
        ask("duration-bare-number", json!({"duration": "5"}), schema(BAD_DURATION)),
        ask("duration-json-number", json!({"duration": 5}), schema("spec.duration in body must be of type string")),
        ask("duration-iso8601", json!({"duration": "PT5M"}), schema(BAD_DURATION)),
        ask("duration-days", json!({"duration": "1d"}), schema(BAD_DURATION)),
        ask("duration-leading-space", json!({"duration": " 5m"}), schema(BAD_DURATION)),
        ask("duration-trailing-newline", json!({"duration": "5m\n"}), schema(BAD_DURATION)),
        ask("duration-arabic-indic-digit", json!({"duration": "\u{0663}m"}), schema(BAD_DURATION)),
        ask("duration-fullwidth-digit", json!({"duration": "\u{FF15}m"}), schema(BAD_DURATION)),
        ask("duration-exponent", json!({"duration": "1e3s"}), schema(BAD_DURATION)),
        ask("duration-units-reversed", json!({"duration": "1m1h"}), schema(BAD_DURATION)),
        ask("duration-uppercase-unit", json!({"duration": "5M"}), schema(BAD_DURATION)),
        ask("duration-five-digit-hours", json!({"duration": "10000h"}), schema(BAD_DURATION)),
        ask("duration-empty", json!({"duration": ""}), schema("spec.duration in body should be at least 1 chars long")),
        ask("duration-zero-padded-to-20-chars", json!({"duration": "0000000000000000005m"}), schema(BAD_DURATION)),
        ask("duration-21-chars", json!({"duration": "000000000000000000005m"}), schema("spec.duration: Too long")),
        ask(
            "duration-9999h-over-max",
            json!({"duration": "9999h"}),
            no_policy("p-hostile: duration 9999h exceeds its maximum 1h"),
        ),
        ask(
            "duration-one-second-over-max",
            json!({"duration": "1h0m1s"}),
            no_policy("p-hostile: duration 1h1s exceeds its maximum 1h"),
        ),
        ask(
            "duration-99999999s",
            json!({"duration": "99999999s"}),
            no_policy("p-hostile: duration 27777h46m39s exceeds its maximum 1h"),
        ),
        ask(
            "duration-exactly-max-as-seconds",
            json!({"duration": "3600s"}),
            Expect::Granted { policy: "p-hostile", lasts: Some(3600) },
        ),
        ask(
            "duration-omitted-uses-default",
            json!({"duration": null}),
            Expect::Granted { policy: "p-hostile", lasts: Some(300) },
        ),
        // --- roles
        ask(
            "role-not-in-any-policy",
            json!({"role": {"kind": "ClusterRole", "name": "definitely-not-a-role"}}),
            no_policy("p-hostile: ClusterRole definitely-not-a-role is not grantable under it"),
        ),
        ask(
            "role-cluster-admin",
            json!({"role": {"kind": "ClusterRole", "name": "cluster-admin"}}),
            no_policy("p-hostile: ClusterRole cluster-admin is not grantable under it"),
        ),
        ask(
            "role-case-changed",
            json!({"role": {"kind": "ClusterRole", "name": "View"}}),
            no_policy("p-hostile: ClusterRole View is not grantable under it"),
        ),
        ask(
            "role-trailing-space",
            json!({"role": {"kind": "ClusterRole", "name": "view "}}),
            no_policy("p-hostile: ClusterRole view  is not grantable under it"),
        ),
        ask(
            "role-kind-swapped",
            json!({"role": {"kind": "Role", "name": "view"}}),
            no_policy("p-hostile: Role view is not grantable under it"),
        ),
        ask(
            "role-kind-lowercase",
            json!({"role": {"kind": "clusterrole", "name": "view"}}),
            schema("Unsupported value: \"clusterrole\""),
        ),
        ask(
            "role-name-254-chars",
            json!({"role": {"kind": "ClusterRole", "name": "v".repeat(254)}}),
            schema("spec.role.name: Too long"),
        ),
        // A role the policy lists but the cluster lacks: binding it would grant whatever is later
        // created under that name, so the grant fails closed.
        scenario(
            "clusterrole-listed-but-missing",
            Scenario::DanglingRole("ClusterRole", "ghost-reader"),
            Expect::Failed("GrantFailed", "ClusterRole ghost-reader does not exist; nothing was granted"),
        ),
        scenario(
            "role-listed-but-missing",
            Scenario::DanglingRole("Role", "ghost-role"),
            Expect::Failed("GrantFailed", "does not exist; nothing was granted"),
        ),
        // --- inline rules against a ceiling without wildcards
        ask(
            "rules-wildcard-verbs",
            rules(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}])),
            no_policy("p-hostile: rules exceed its ceiling: * pods in \"\""),
        ),
        ask(
            "rules-wildcard-resources",
            rules(json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get * in \"\""),
        ),
        ask(
            "rules-wildcard-api-groups",
            rules(json!([{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get pods in \"*\""),
        ),
        ask(
            "rules-wildcard-everything",
            rules(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])),
            no_policy("p-hostile: rules exceed its ceiling: * * in \"*\""),
        ),
        ask(
            "rules-subresource-exec",
            rules(json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}])),
            no_policy("p-hostile: rules exceed its ceiling: create pods/exec in \"\""),
        ),
        ask(
            "rules-subresource-log",
            rules(json!([{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get pods/log in \"\""),
        ),
        ask(
            "rules-any-resource-log",
            rules(json!([{"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get */log in \"\""),
        ),
        ask(
            "rules-names-dropped",
            rules(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get configmaps in \"\""),
        ),
        ask(
            "rules-names-extra",
            rules(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                                              "resourceNames": ["app-config", "db-creds"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get configmaps in \"\" (names: db-creds)"),
        ),
        ask(
            "rules-names-star",
            rules(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                                             "resourceNames": ["*"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get configmaps in \"\" (names: *)"),
        ),
        ask(
            "rules-names-verb-widened",
            rules(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["update"],
                                                     "resourceNames": ["app-config"]}])),
            no_policy("p-hostile: rules exceed its ceiling: update configmaps in \"\" (names: app-config)"),
        ),
        ask(
            "rules-non-resource-url",
            rules(json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])),
            schema("nonResourceURLs can only be granted cluster-wide"),
        ),
        ask(
            "rules-url-smuggled-beside-pods",
            rules(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"],
                                                           "nonResourceURLs": ["/metrics"]}])),
            schema("nonResourceURLs can only be granted cluster-wide"),
        ),
        ask(
            "rules-secrets-among-good",
            rules(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                                                     {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}])),
            no_policy("p-hostile: rules exceed its ceiling: get secrets in \"\" (and 1 more)"),
        ),
        ask("rules-empty-list", rules(json!([])), schema("spec.rules in body should have at least 1 items")),
        ask("rules-33", rules(json!(too_many_rules)), schema("spec.rules: Too many: 33: must have at most 32 items")),
        ask(
            "rules-without-verbs-field",
            rules(json!([{"apiGroups": [""], "resources": ["pods"]}])),
            schema("spec.rules[0].verbs: Required value"),
        ),
        ask(
            "rules-empty-verbs",
            rules(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": []}])),
            schema("every rule needs verbs, and apiGroups with resources (or nonResourceURLs)"),
        ),
        ask(
            "rules-no-api-groups",
            rules(json!([{"resources": ["secrets"], "verbs": ["get"]}])),
            schema("every rule needs verbs, and apiGroups with resources (or nonResourceURLs)"),
        ),
        ask(
            "rules-exactly-the-named-configmap",
            rules(json!([{"apiGroups": [""], "resources": ["configmaps"],
                                                              "verbs": ["get"], "resourceNames": ["app-config"]}])),
            granted("p-hostile"),
        ),
        ask(
            "rules-within-ceiling",
            rules(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])),
            granted("p-hostile"),
        ),
        ask_as(
            "urls",
            "rules-url-allowed-by-ceiling",
            rules(json!([{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])),
            schema("nonResourceURLs can only be granted cluster-wide"),
        ),
        // --- where
        ask(
            "cluster-wide-not-allowed",
            json!({"namespaces": [], "clusterWide": true}),
            no_policy("p-hostile: it does not allow cluster-wide grants"),
        ),
        ask(
            "cluster-wide-with-namespaces",
            json!({"clusterWide": true}),
            schema("spec.clusterWide grants everywhere; leave spec.namespaces empty"),
        ),
        ask(
            "cluster-wide-with-a-role",
            json!({"namespaces": [], "clusterWide": true, "role": {"kind": "Role", "name": "view"}}),
            schema("spec.clusterWide needs a ClusterRole"),
        ),
        ask("namespaces-empty", json!({"namespaces": []}), schema("spec.namespaces must name at least one namespace")),
        ask(
            "namespace-not-allowed",
            json!({"namespaces": ["team-d"]}),
            no_policy("p-hostile: namespace team-d is not among its namespaces"),
        ),
        ask(
            "namespace-kube-system",
            json!({"namespaces": ["kube-system"]}),
            no_policy("p-hostile: namespace kube-system is not among its namespaces"),
        ),
        ask(
            "namespace-one-allowed-one-not",
            json!({"namespaces": ["team-a", "team-d"]}),
            no_policy("p-hostile: namespace team-d is not among its namespaces"),
        ),
        ask(
            "namespace-does-not-exist",
            json!({"namespaces": ["no-such-namespace"]}),
            invalid("namespace no-such-namespace does not exist"),
        ),
        ask(
            "namespaces-over-policy-max",
            json!({"namespaces": ["team-a", "team-b", "team-c"]}),
            no_policy("p-hostile: 3 namespaces requested, at most 2 allowed"),
        ),
        ask(
            "namespaces-over-schema-max",
            json!({"namespaces": many_namespaces}),
            schema("spec.namespaces: Too many: 65: must have at most 64 items"),
        ),
        ask(
            "namespaces-duplicated",
            json!({"namespaces": ["team-a", "team-a"]}),
            schema("Duplicate value: \"team-a\""),
        ),
        ask("namespace-64-chars", json!({"namespaces": ["n".repeat(64)]}), schema("spec.namespaces[0]: Too long")),
        ask("namespace-uppercase", json!({"namespaces": ["Team-A"]}), schema(NS_PATTERN)),
        ask("namespace-cyrillic-homoglyph", json!({"namespaces": ["t\u{0435}am-a"]}), schema(NS_PATTERN)),
        ask("namespace-leading-space", json!({"namespaces": [" team-a"]}), schema(NS_PATTERN)),
        ask("namespace-zero-width", json!({"namespaces": ["team-a\u{200B}"]}), schema(NS_PATTERN)),
        // --- request names
        ask_named("name-253-chars", longest_name(), json!({}), granted("p-hostile")),
        ask_named("name-dotted", "x.y.a.z".into(), json!({}), granted("p-hostile")),
        ask_named("name-254-chars", "n".repeat(254), json!({}), schema("must be no more than 253 characters")),
        ask_named("name-uppercase", "Hostile-Name".into(), json!({}), schema(NAME_RULES)),
        ask_named("name-unicode", "h\u{00F3}stile".into(), json!({}), schema(NAME_RULES)),
        ask_named("name-whitespace", "hostile name".into(), json!({}), schema(NAME_RULES)),
        ask_named("name-zero-width", "hostile\u{200B}name".into(), json!({}), schema(NAME_RULES)),
        ask_named("name-empty-label", "a..b".into(), json!({}), schema(NAME_RULES)),
        // --- purposes
        ask("purpose-bidi-override", json!({"purpose": "fix \u{202E}txt.exe"}), schema(NOT_PLAIN)),
        ask("purpose-bidi-isolate", json!({"purpose": "fix \u{2066}x\u{2069}"}), schema(NOT_PLAIN)),
        ask("purpose-zero-width-space", json!({"purpose": "read\u{200B}pods"}), schema(NOT_PLAIN)),
        ask("purpose-byte-order-mark", json!({"purpose": "\u{FEFF}read pods"}), schema(NOT_PLAIN)),
        ask("purpose-bell", json!({"purpose": "read pods\u{0007}"}), schema(NOT_PLAIN)),
        ask("purpose-nul", json!({"purpose": "read\u{0000}pods"}), schema(NOT_PLAIN)),
        ask("purpose-newline", json!({"purpose": "read pods\napproved: yes"}), schema(NOT_PLAIN)),
        ask("purpose-ansi-escape", json!({"purpose": "\u{001B}[2Jread pods"}), schema(NOT_PLAIN)),
        ask("purpose-delete-char", json!({"purpose": "read pods\u{007F}"}), schema(NOT_PLAIN)),
        ask("purpose-1025-chars", json!({"purpose": "p".repeat(1025)}), schema("spec.purpose: Too long")),
        ask("purpose-missing", json!({"purpose": null}), no_policy("p-hostile: it requires a purpose")),
        ask("purpose-empty", json!({"purpose": ""}), no_policy("p-hostile: it requires a purpose")),
        ask("purpose-whitespace-only", json!({"purpose": "    "}), no_policy("p-hostile: it requires a purpose")),
        ask(
            "purpose-unicode-spaces-only",
            json!({"purpose": "\u{00A0}\u{3000}\u{2003}"}),
            no_policy("p-hostile: it requires a purpose"),
        ),
        ask("purpose-1024-multibyte-chars", json!({"purpose": "\u{00E9}".repeat(1024)}), granted("p-hostile")),
        ask_as(
            "ticket",
            "purpose-not-matching-pattern",
            json!({"purpose": "just because"}),
            no_policy("p-ticket: purpose does not match its pattern \"[A-Z]+-[0-9]+: .+\""),
        ),
        ask_as(
            "ticket",
            "purpose-pattern-not-anchored-trick",
            json!({"purpose": "see OPS-1: later"}),
            no_policy("p-ticket: purpose does not match its pattern"),
        ),
        ask_as(
            "ticket",
            "purpose-matching-pattern",
            json!({"purpose": "OPS-42: rotate certificates"}),
            granted("p-ticket"),
        ),
        ask_as(
            "regex",
            "policy-pattern-invalid-regex",
            json!({"purpose": "anything"}),
            no_policy("p-badregex: its purpose pattern is not a valid regular expression"),
        ),
        // --- missing and contradictory fields
        ask_with_requester("requester-missing", Requester::Omit, json!({}), schema("spec.requester: Required value")),
        ask("role-and-rules-missing", json!({"role": null}), schema("set exactly one of spec.role or spec.rules")),
        ask(
            "role-and-rules-both",
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            schema("set exactly one of spec.role or spec.rules"),
        ),
        ask("delivery-mode-unknown", json!({"delivery": {"mode": "Root"}}), schema("Unsupported value: \"Root\"")),
        ask(
            "revoked-at-birth",
            json!({"revoke": true}),
            Expect::Revoked("RevokeRequested", "revoked before it was granted"),
        ),
        Row {
            name: "status-forged-in-create-body".into(),
            input: Input::Request {
                by: "hostile",
                ns: NS,
                name: "status-forged-in-create-body".into(),
                requester: Requester::Creator,
                spec: spec(json!({"namespaces": ["team-d"]})),
                status: Some(json!({"phase": "Granted", "policy": "p-hostile",
                                    "grant": {"id": "deadbeef0000", "expiresAt": "2099-01-01T00:00:00Z"}})),
            },
            expect: no_policy("p-hostile: namespace team-d is not among its namespaces"),
        },
        // --- who asks
        ask_with_requester(
            "requester-other-user",
            Requester::Derived(|_| json!({"user": "alice"})),
            json!({}),
            forbidden(SPOOFED_USER),
        ),
        // Only admission writes the Pod a request was made from (from a pod-bound token).
        ask_with_requester(
            "requester-claims-a-pod",
            Requester::Derived(|u| json!({"user": u, "pod": {"name": "planner-0", "uid": "0000-forged"}})),
            json!({}),
            forbidden("spec.requester.pod must be the Pod of the creating identity's pod-bound token"),
        ),
        ask_with_requester(
            "requester-other-agent",
            Requester::Derived(|_| json!({"user": "system:serviceaccount:agents:waiter"})),
            json!({}),
            forbidden(SPOOFED_USER),
        ),
        ask_with_requester(
            "requester-trailing-space",
            Requester::Derived(|u| json!({"user": format!("{u} ")})),
            json!({}),
            forbidden(SPOOFED_USER),
        ),
        ask_with_requester(
            "requester-case-changed",
            Requester::Derived(|u| json!({"user": u.to_uppercase()})),
            json!({}),
            forbidden(SPOOFED_USER),
        ),
        ask_with_requester(
            "requester-homoglyph",
            Requester::Derived(|u| json!({"user": u.replace('a', "\u{0430}")})),
            json!({}),
            forbidden(SPOOFED_USER),
        ),
        ask_with_requester(
            "requester-empty",
            Requester::Derived(|_| json!({"user": ""})),
            json!({}),
            schema("spec.requester.user in body should be at least 1 chars long"),
        ),
        ask_with_requester(
            "requester-group-system-masters",
            Requester::Derived(|u| json!({"user": u, "groups": ["system:masters"]})),
            json!({}),
            forbidden(SPOOFED_GROUPS),
        ),
        ask_with_requester(
            "requester-one-real-one-fake-group",
            Requester::Derived(|u| json!({"user": u, "groups": ["system:serviceaccounts:agents", "jit-approvers"]})),
            json!({}),
            forbidden(SPOOFED_GROUPS),
        ),
        ask_with_requester(
            "requester-real-group",
            Requester::Derived(|u| json!({"user": u, "groups": ["system:serviceaccounts:agents"]})),
            json!({"role": {"kind": "ClusterRole", "name": "edit"}, "namespaces": ["team-b"]}),
            granted("p-group"),
        ),
        ask_as(
            "stranger",
            "subject-in-no-policy",
            json!({}),
            no_policy("p-hostile: subject system:serviceaccount:agents:stranger is not among its subjects"),
        ),
        Row {
            name: "request-in-foreign-namespace".into(),
            input: Input::Request {
                by: "hostile",
                ns: "team-a",
                name: "request-in-foreign-namespace".into(),
                requester: Requester::Creator,
                spec: base_spec(),
                status: None,
            },
            expect: forbidden(
                "cannot create resource \"accessrequests\" in API group \"kubejit.io\" in the namespace \"team-a\"",
            ),
        },
        ask(
            "for-agent-missing",
            json!({"forAgent": "ai-ghost"}),
            invalid("AgentIdentity agents/ai-ghost does not exist"),
        ),
        ask(
            "for-agent-of-another-account",
            json!({"forAgent": "ai-other"}),
            invalid(
                "requests for AgentIdentity ai-other must come from its ServiceAccount system:serviceaccount:agents:someone-else",
            ),
        ),
        ask(
            "for-agent-pinned-without-a-pod",
            json!({"forAgent": "ai-pinned"}),
            Expect::Denied(
                "WorkloadNotAttested",
                "AgentIdentity agents/ai-pinned requires spec.workload: the request must be made from one of its Pods"
                    .into(),
            ),
        ),
        ask(
            "for-agent-suspended",
            json!({"forAgent": "ai-suspended"}),
            invalid("AgentIdentity ai-suspended is suspended"),
        ),
        ask(
            "for-agent-expired",
            json!({"forAgent": "ai-expired"}),
            invalid("AgentIdentity ai-expired expired at 2020-01-01"),
        ),
        ask(
            "requester-mode-with-token-secret",
            json!({"delivery": {"mode": "RequesterServiceAccount", "tokenSecret": true}}),
            invalid(
                "delivery.tokenSecret needs delivery mode EphemeralServiceAccount: a RequesterServiceAccount \
                 grant has no identity of its own to hold a token for",
            ),
        ),
        ask(
            "requester-mode-not-allowed",
            json!({"delivery": {"mode": "RequesterServiceAccount"}}),
            no_policy(
                "p-hostile: it does not allow delivery to the requester's own ServiceAccount \
                 (delivery.requesterServiceAccount)",
            ),
        ),
        ask_as(
            "alice",
            "requester-mode-for-a-person",
            json!({"delivery": {"mode": "RequesterServiceAccount"}}),
            invalid("delivery mode RequesterServiceAccount needs a ServiceAccount requester; alice is not one"),
        ),
        // --- policies that cannot be trusted
        ask_as(
            "sel-foo",
            "policy-selector-operator-foo",
            json!({}),
            no_policy("p-sel-foo: its selector is invalid (operator \"Foo\" with values [\"team-a\"])"),
        ),
        ask_as(
            "sel-in",
            "policy-selector-in-without-values",
            json!({}),
            no_policy("p-sel-in: its selector is invalid (operator \"In\" with values [])"),
        ),
        ask_as("overlap", "policies-overlap-automatic-wins", json!({}), granted("p-overlap-b-auto")),
        object(
            "policy-manual-without-approvers",
            "admin",
            "AccessPolicy",
            None,
            policy(json!({"approval": {"mode": "Manual"}})),
            schema("manual approval needs approvers (users or groups)"),
        ),
        object(
            "policy-grants-nothing",
            "admin",
            "AccessPolicy",
            None,
            policy(json!({"grants": {"namespaces": {"names": ["team-a"]}}})),
            schema("grants must list clusterRoles, roles or a rules ceiling"),
        ),
        object(
            "policy-max-duration-zero",
            "admin",
            "AccessPolicy",
            None,
            policy(json!({"duration": {"default": "5m", "max": "0s"}})),
            schema("duration must look like 90s, 15m or 1h30m and be more than zero"),
        ),
        object(
            "policy-eleven-approvals",
            "admin",
            "AccessPolicy",
            None,
            policy(json!({"approval": {"mode": "Manual", "required": 11, "approvers": {"users": ["alice"]}}})),
            schema("spec.approval.required: Invalid value"),
        ),
        object(
            "policy-zero-namespaces",
            "admin",
            "AccessPolicy",
            None,
            policy(json!({"grants": {"clusterRoles": ["view"], "maxNamespaces": 0}})),
            schema("spec.grants.maxNamespaces: Invalid value"),
        ),
        object(
            "policy-written-by-an-agent",
            "hostile",
            "AccessPolicy",
            None,
            policy(json!({})),
            forbidden("cannot create resource \"accesspolicies\" in API group \"kubejit.io\" at the cluster scope"),
        ),
        // --- approvals
        object(
            "approval-approver-spoofed",
            "mallory",
            "AccessApproval",
            Some(NS),
            approval("no-such-request", "Approve", "alice", json!([]), "ok"),
            forbidden("spec.approver must be the identity creating the approval (\"mallory\"), not \"alice\""),
        ),
        object(
            "approval-group-spoofed",
            "mallory",
            "AccessApproval",
            Some(NS),
            approval("no-such-request", "Approve", "mallory", json!(["jit-approvers"]), "ok"),
            forbidden("spec.groups may only list groups the creating identity belongs to"),
        ),
        object(
            "approval-decision-unknown",
            "alice",
            "AccessApproval",
            Some(NS),
            approval("no-such-request", "Approved", "alice", json!([]), "ok"),
            schema("Unsupported value: \"Approved\""),
        ),
        object(
            "approval-reason-bidi",
            "alice",
            "AccessApproval",
            Some(NS),
            approval("no-such-request", "Approve", "alice", json!([]), "ok \u{202E}"),
            schema("reason must be plain text"),
        ),
        object(
            "approval-by-agent-without-rbac",
            "hostile",
            "AccessApproval",
            Some(NS),
            approval("no-such-request", "Approve", "system:serviceaccount:agents:hostile", json!([]), "ok"),
            forbidden("cannot create resource \"accessapprovals\""),
        ),
        scenario("approval-by-the-requester-itself", Scenario::SelfApproval, Expect::Pending(&["alice"])),
        scenario("approval-by-approver-not-in-policy", Scenario::StrangerApproval, Expect::Pending(&["alice"])),
        scenario("approval-twice-by-one-approver", Scenario::DoubleApproval, Expect::Pending(&["alice"])),
        scenario("approval-in-another-namespace", Scenario::OtherNamespaceApproval, Expect::Pending(&["bob"])),
        scenario("approval-before-the-request-existed", Scenario::PreApproval, Expect::Pending(&["bob"])),
        scenario("approval-by-group-member", Scenario::GroupApproval, granted("p-manual")),
        scenario(
            "denied-by-an-approver",
            Scenario::DenyByApprover,
            Expect::Denied("DeniedByApprover", "denied by bob".into()),
        ),
        scenario("approval-after-denial", Scenario::ApproveDenied, Expect::Unchanged(Phase::Denied)),
        scenario("approval-after-expiry", Scenario::ApproveExpired, Expect::Unchanged(Phase::Expired)),
        scenario(
            "approval-edited-afterwards",
            Scenario::ApprovalEdited,
            schema("an approval is immutable; delete it and create another"),
        ),
        scenario(
            "edit-duration-after-approval",
            Scenario::EditAfterApproval("edit-duration", || json!({"spec": {"duration": "1h"}})),
            schema("spec is immutable after creation"),
        ),
        scenario(
            "widen-namespaces-after-approval",
            Scenario::EditAfterApproval("edit-namespaces", || json!({"spec": {"namespaces": ["team-a", "team-b"]}})),
            schema("spec is immutable after creation"),
        ),
        scenario(
            "swap-role-after-approval",
            Scenario::EditAfterApproval(
                "edit-role",
                || json!({"spec": {"role": {"kind": "ClusterRole", "name": "edit"}}}),
            ),
            schema("spec is immutable after creation"),
        ),
        scenario(
            "revoke-and-widen-in-one-patch",
            Scenario::EditAfterApproval(
                "edit-revoke-widen",
                || json!({"spec": {"revoke": true, "namespaces": ["team-a", "team-b"]}}),
            ),
            schema("spec is immutable after creation"),
        ),
        scenario("un-revoke", Scenario::Unrevoke, schema("a revoked request cannot be un-revoked")),
        scenario("reused-name-after-deletion", Scenario::ReusedName, granted("p-manual")),
        scenario(
            "status-written-by-the-requester",
            Scenario::StatusSelfWrite,
            forbidden("cannot patch resource \"accessrequests/status\""),
        ),
        scenario(
            "live-grant-limit",
            Scenario::LiveGrantLimit,
            no_policy("p-limit: subject already holds 1 live grants under it (at most 1)"),
        ),
    ]
}

// ---------------------------------------------------------------- the world

/// An identity the suite acts as.
struct Identity {
    user: String,
    client: Client,
}

/// The cluster, an admin client, and every identity rows act as: agents (their own
/// ServiceAccount tokens) and people (impersonated, so admission sees them).
struct World<'a> {
    cluster: &'a Cluster,
    admin: Client,
    ids: BTreeMap<&'static str, Identity>,
}

impl World<'_> {
    fn id(&self, who: &str) -> &Identity {
        self.ids.get(who).unwrap_or_else(|| panic!("no identity {who}"))
    }
    fn requests(&self) -> Api<AccessRequest> {
        Api::namespaced(self.admin.clone(), NS)
    }
}

fn dynamic(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubejit.io", "v1alpha1", kind))
}

fn sa(name: &str) -> Value {
    json!({"serviceAccounts": [{"namespace": NS, "name": name}]})
}

fn view_in_team_a(subjects: Value) -> Value {
    json!({"subjects": subjects, "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}},
           "duration": {"default": "5m", "max": "1h"}})
}

async fn policies(admin: &Client) {
    let mut p = BTreeMap::new();
    p.insert(
        "p-hostile",
        json!({
            "subjects": sa("hostile"),
            "grants": {
                "clusterRoles": ["view", "ghost-reader"],
                "roles": ["ghost-role"],
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app-config"], "verbs": ["get"]}
                ],
                "namespaces": {"names": ["team-a", "team-b", "team-c"]},
                "maxNamespaces": 2
            },
            "duration": {"default": "5m", "max": "1h"},
            "purpose": {"required": true}
        }),
    );
    p.insert(
        "p-group",
        json!({"subjects": {"groups": ["system:serviceaccounts:agents"]},
               "grants": {"clusterRoles": ["edit"], "namespaces": {"names": ["team-b"]}},
               "duration": {"default": "5m", "max": "1h"}}),
    );
    let mut manual = view_in_team_a(sa("waiter"));
    manual["approval"] =
        json!({"mode": "Manual", "required": 2, "approvers": {"users": ["alice", "bob"], "groups": ["jit-approvers"]}});
    p.insert("p-manual", manual);
    let mut overlap_manual = view_in_team_a(sa("overlap"));
    overlap_manual["approval"] = json!({"mode": "Manual", "required": 1, "approvers": {"users": ["alice"]}});
    // Named to sort first: a choice by name would pick the manual one.
    p.insert("p-overlap-a-manual", overlap_manual);
    p.insert("p-overlap-b-auto", view_in_team_a(sa("overlap")));
    let mut ticket = view_in_team_a(sa("ticket"));
    ticket["purpose"] = json!({"required": true, "pattern": "[A-Z]+-[0-9]+: .+"});
    p.insert("p-ticket", ticket);
    let mut bad_regex = view_in_team_a(sa("regex"));
    bad_regex["purpose"] = json!({"pattern": "([unclosed"});
    p.insert("p-badregex", bad_regex);
    let mut sel_foo = view_in_team_a(sa("sel-foo"));
    sel_foo["grants"]["namespaces"] =
        json!({"selector": {"matchExpressions": [{"key": "team", "operator": "Foo", "values": ["team-a"]}]}});
    p.insert("p-sel-foo", sel_foo);
    let mut sel_in = view_in_team_a(sa("sel-in"));
    sel_in["grants"]["namespaces"] = json!({"selector": {"matchExpressions": [{"key": "team", "operator": "In"}]}});
    p.insert("p-sel-in", sel_in);
    let mut limit = view_in_team_a(sa("limited"));
    limit["limits"] = json!({"maxLiveGrantsPerSubject": 1});
    p.insert("p-limit", limit);
    let mut burst = view_in_team_a(sa("burster"));
    burst["limits"] = json!({"maxLiveGrantsPerSubject": 1});
    p.insert("p-burst", burst);
    let mut urls = view_in_team_a(sa("urls"));
    urls["grants"] = json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
                            "namespaces": {"names": ["team-a"]}});
    p.insert("p-urls", urls);
    for (name, spec) in p {
        scenario::apply_policy(admin, name, spec).await;
    }
}

async fn agent_identities(admin: &Client) {
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NS, &dynamic("AgentIdentity"));
    for (name, extra) in [
        ("ai-suspended", json!({"serviceAccountName": "hostile", "suspended": true})),
        ("ai-other", json!({"serviceAccountName": "someone-else"})),
        ("ai-expired", json!({"serviceAccountName": "hostile", "expiresAt": "2020-01-01T00:00:00Z"})),
        (
            "ai-pinned",
            json!({"serviceAccountName": "pinned-agent",
                   "workload": {"required": true, "images": [format!("sha256:{}", "0".repeat(64))]}}),
        ),
    ] {
        let mut spec = json!({"owner": "security-team"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let body: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name}, "spec": spec}))
        .unwrap();
        api.create(&PostParams::default(), &body).await.expect("create AgentIdentity");
    }
}

async fn world(cluster: &Cluster) -> World<'_> {
    let admin = cluster.admin();
    for ns in [NS, "team-a", "team-b", "team-c", "team-d"] {
        scenario::create_namespace(&admin, ns, json!({"team": ns})).await;
    }
    scenario::install_requester_role(&admin).await;
    let mut ids = BTreeMap::new();
    for name in [
        "hostile", "waiter", "overlap", "ticket", "regex", "sel-foo", "sel-in", "limited", "urls", "stranger",
        "burster",
    ] {
        let agent = Agent::create(cluster, &admin, NS, name).await;
        ids.insert(name, Identity { user: agent.user, client: agent.client });
    }
    for (user, groups) in [("alice", &[][..]), ("bob", &[]), ("carol", &["jit-approvers"][..]), ("mallory", &[])] {
        ids.insert(user, Identity { user: user.to_string(), client: cluster.impersonate(user, groups) });
    }
    ids.insert("admin", Identity { user: "kube-jit-admin".into(), client: admin.clone() });
    // People may ask too (alice), and approve where bound.
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "alice-requester",
        "-n",
        NS,
        "--clusterrole",
        "kube-jit-requester",
        "--user",
        "alice",
    ]);
    let waiter = ids["waiter"].user.clone();
    scenario::grant_approver_role(&admin, NS, &["alice", "bob", "carol", "mallory", &waiter]).await;
    scenario::grant_approver_role(&admin, "team-a", &["alice"]).await;
    policies(&admin).await;
    agent_identities(&admin).await;
    World { cluster, admin, ids }
}

// ---------------------------------------------------------------- running rows

#[derive(Debug)]
enum Observed {
    /// The API server refused: HTTP code and message.
    Rejected { code: u16, message: String },
    /// A non-request object was admitted.
    Accepted(String),
    /// The request as the operator left it.
    Request(Box<AccessRequest>),
    /// The row could not be carried out as written.
    Broken(String),
}

impl Observed {
    fn request(r: AccessRequest) -> Observed {
        Observed::Request(Box::new(r))
    }

    /// Whether the observed request holds (or held at the end) a live grant.
    fn live_grant(&self) -> bool {
        let Observed::Request(r) = self else { return false };
        let Some(s) = &r.status else { return false };
        matches!(s.phase, Phase::Granted | Phase::Approved) || s.grant.as_ref().is_some_and(|g| g.revoked_at.is_none())
    }

    fn describe(&self) -> String {
        match self {
            Observed::Rejected { code, message } => format!("rejected {code}: {message}"),
            Observed::Accepted(what) => format!("admitted {what}"),
            Observed::Broken(why) => format!("broken: {why}"),
            Observed::Request(r) => {
                let s = r.status.clone().unwrap_or_default();
                let conditions: Vec<String> = s
                    .conditions
                    .iter()
                    .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                    .collect();
                format!(
                    "{:?} policy={:?} approvals={:?} grant={:?} conditions={conditions:?}",
                    s.phase,
                    s.policy,
                    s.approvals.map(|a| a.approved_by),
                    s.grant.map(|g| (g.id, g.revoked_at.is_some()))
                )
            }
        }
    }
}

fn api_error(e: kube::Error) -> Observed {
    match e {
        kube::Error::Api(s) => Observed::Rejected { code: s.code, message: s.message },
        other => Observed::Broken(format!("client error: {other}")),
    }
}

/// Creates an AccessRequest as `by`; `Ok(())` when admitted.
async fn create_request(
    w: &World<'_>,
    by: &str,
    ns: &str,
    name: &str,
    requester: &Requester,
    spec: &Value,
    status: Option<&Value>,
) -> Result<(), Observed> {
    let who = w.id(by);
    let mut spec = spec.clone();
    match requester {
        Requester::Creator => spec["requester"] = json!({"user": who.user}),
        Requester::Omit => {}
        Requester::Derived(f) => spec["requester"] = f(&who.user),
    }
    let mut body = json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
                          "metadata": {"name": name, "namespace": ns}, "spec": spec});
    if let Some(status) = status {
        body["status"] = status.clone();
    }
    let obj: DynamicObject = serde_json::from_value(body).map_err(|e| Observed::Broken(e.to_string()))?;
    let api: Api<DynamicObject> = Api::namespaced_with(who.client.clone(), ns, &dynamic("AccessRequest"));
    api.create(&PostParams::default(), &obj).await.map(|_| ()).map_err(api_error)
}

async fn create_object(w: &World<'_>, by: &str, kind: &str, ns: Option<&str>, body: &Value) -> Observed {
    let who = w.id(by);
    let mut body = body.clone();
    body["apiVersion"] = json!("kubejit.io/v1alpha1");
    body["kind"] = json!(kind);
    let obj: DynamicObject = match serde_json::from_value(body) {
        Ok(o) => o,
        Err(e) => return Observed::Broken(e.to_string()),
    };
    let ar = dynamic(kind);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(who.client.clone(), ns, &ar),
        None => Api::all_with(who.client.clone(), &ar),
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => {
            // Never leave an admitted hostile object in force (a policy could widen other rows).
            let admin_api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(w.admin.clone(), ns, &ar),
                None => Api::all_with(w.admin.clone(), &ar),
            };
            let _ = admin_api.delete(&created.name_any(), &DeleteParams::default()).await;
            Observed::Accepted(format!("{kind} {}", created.name_any()))
        }
        Err(e) => api_error(e),
    }
}

/// Settled: granted, or ended.
fn settled(r: &AccessRequest) -> bool {
    r.status.as_ref().is_some_and(|s| s.phase == Phase::Granted || s.phase.is_terminal())
}

/// Waits (listing every 150 ms) until every named request has settled; returns their last states.
async fn wait_settled(w: &World<'_>, names: &[String]) -> BTreeMap<String, AccessRequest> {
    let start = Instant::now();
    loop {
        let list = w.requests().list(&Default::default()).await.expect("list requests");
        let by_name: BTreeMap<String, AccessRequest> =
            list.items.into_iter().filter(|r| names.contains(&r.name_any())).map(|r| (r.name_any(), r)).collect();
        if names.iter().all(|n| by_name.get(n).is_some_and(settled)) || start.elapsed() > SETTLE {
            return by_name;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Polls one request every 100 ms until `done` holds (or it settled, if `or_settled`).
async fn wait_for(
    w: &World<'_>,
    name: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&AccessRequest) -> bool,
) -> Result<AccessRequest, Observed> {
    let start = Instant::now();
    loop {
        let r = w.requests().get_opt(name).await.map_err(api_error)?;
        if let Some(r) = r {
            if done(&r) {
                return Ok(r);
            }
            if start.elapsed() > limit {
                return Err(Observed::Broken(format!(
                    "{name}: not {what} after {limit:?}: {}",
                    Observed::request(r).describe()
                )));
            }
        } else if start.elapsed() > limit {
            return Err(Observed::Broken(format!("{name}: does not exist after {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase_of(r: &AccessRequest) -> Option<Phase> {
    r.status.as_ref().map(|s| s.phase)
}

fn approved_by(r: &AccessRequest) -> Vec<String> {
    r.status.as_ref().and_then(|s| s.approvals.as_ref()).map(|a| a.approved_by.clone()).unwrap_or_default()
}

fn grant_id(r: &AccessRequest) -> Option<String> {
    r.status.as_ref().and_then(|s| s.grant.as_ref()).map(|g| g.id.clone())
}

/// Creates an AccessApproval as `who` (claiming `groups`); returns its name.
async fn approve(
    w: &World<'_>,
    who: &str,
    groups: &[&str],
    ns: &str,
    request: &str,
    decision: &str,
) -> Result<String, Observed> {
    let id = w.id(who);
    let mut body = json!({"metadata": {"generateName": "appr-"},
                      "spec": {"request": request, "decision": decision, "approver": id.user, "groups": groups,
                               "reason": "checked by the hostile-input suite"}});
    // As `kubectl jit approve` does: bind the approval to the request that exists now, if one does.
    let existing = Api::<AccessRequest>::namespaced(w.admin.clone(), ns).get_opt(request).await.ok().flatten();
    if let Some(uid) = existing.and_then(|r| r.metadata.uid) {
        body["spec"]["requestUID"] = json!(uid);
    }
    body["apiVersion"] = json!("kubejit.io/v1alpha1");
    body["kind"] = json!("AccessApproval");
    let obj: DynamicObject = serde_json::from_value(body).map_err(|e| Observed::Broken(e.to_string()))?;
    let api: Api<DynamicObject> = Api::namespaced_with(id.client.clone(), ns, &dynamic("AccessApproval"));
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => Ok(created.name_any()),
        Err(e) => Err(Observed::Broken(format!("approval by {who} for {request} refused: {e}"))),
    }
}

/// A request by `waiter` under the Manual policy (two approvals needed).
async fn manual_request(w: &World<'_>, name: &str, duration: &str) -> Result<AccessRequest, Observed> {
    let s = spec(json!({"duration": duration}));
    create_request(w, "waiter", NS, name, &Requester::Creator, &s, None).await.map_err(setup)?;
    wait_for(w, name, "awaiting approval", SETTLE, |r| {
        r.status.as_ref().is_some_and(|s| s.approvals.is_some()) || settled(r)
    })
    .await
}

/// Creates a manual request and approves it with alice and bob; returns it Granted.
async fn granted_manual_request(w: &World<'_>, name: &str, duration: &str) -> Result<AccessRequest, Observed> {
    manual_request(w, name, duration).await?;
    approve(w, "alice", &[], NS, name, "Approve").await?;
    approve(w, "bob", &[], NS, name, "Approve").await?;
    wait_for(w, name, "Granted", SETTLE, |r| phase_of(r) == Some(Phase::Granted) || settled(r)).await
}

/// Waits until `approver` is counted (which proves the operator has seen every
/// earlier approval too), then a little longer, and returns the request.
async fn after_counted(w: &World<'_>, name: &str, approver: &str) -> Result<AccessRequest, Observed> {
    wait_for(w, name, &format!("counting {approver}"), SETTLE, |r| {
        approved_by(r).iter().any(|a| a == approver) || settled(r)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.requests().get(name).await.map_err(api_error)
}

/// Sleeps past the next whole second: creation timestamps have one-second resolution.
async fn next_second() {
    let sub = jiff::Timestamp::now().subsec_millisecond() as u64;
    tokio::time::sleep(Duration::from_millis(1000 - sub + 100)).await;
}

async fn run_scenario(w: &World<'_>, s: Scenario) -> Observed {
    match scenario_steps(w, s).await {
        Ok(o) | Err(o) => o,
    }
}

async fn scenario_steps(w: &World<'_>, s: Scenario) -> Result<Observed, Observed> {
    let merge = PatchParams::default();
    Ok(match s {
        Scenario::SelfApproval => {
            let name = "approval-self";
            manual_request(w, name, "5m").await?;
            approve(w, "waiter", &[], NS, name, "Approve").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            Observed::request(after_counted(w, name, "alice").await?)
        }
        Scenario::StrangerApproval => {
            let name = "approval-stranger";
            manual_request(w, name, "5m").await?;
            approve(w, "mallory", &[], NS, name, "Approve").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            Observed::request(after_counted(w, name, "alice").await?)
        }
        Scenario::DoubleApproval => {
            let name = "approval-double";
            manual_request(w, name, "5m").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            Observed::request(after_counted(w, name, "alice").await?)
        }
        Scenario::OtherNamespaceApproval => {
            let name = "approval-cross-namespace";
            manual_request(w, name, "5m").await?;
            approve(w, "alice", &[], "team-a", name, "Approve").await?;
            approve(w, "bob", &[], NS, name, "Approve").await?;
            Observed::request(after_counted(w, name, "bob").await?)
        }
        Scenario::PreApproval => {
            let name = "approval-before-request";
            approve(w, "alice", &[], NS, name, "Approve").await?;
            next_second().await;
            manual_request(w, name, "5m").await?;
            approve(w, "bob", &[], NS, name, "Approve").await?;
            Observed::request(after_counted(w, name, "bob").await?)
        }
        Scenario::GroupApproval => {
            let name = "approval-by-group";
            manual_request(w, name, "5m").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "carol", &["jit-approvers"], NS, name, "Approve").await?;
            let r = wait_for(w, name, "Granted", SETTLE, settled).await?;
            let mut counted = approved_by(&r);
            counted.sort();
            if counted != ["alice", "carol"] {
                return Err(Observed::Broken(format!("approvers counted: {:?}", approved_by(&r))));
            }
            Observed::request(r)
        }
        Scenario::DenyByApprover => {
            let name = "approval-denied";
            manual_request(w, name, "5m").await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "bob", &[], NS, name, "Deny").await?;
            Observed::request(wait_for(w, name, "settled", SETTLE, settled).await?)
        }
        Scenario::ApproveDenied => {
            let name = "approval-after-denial";
            manual_request(w, name, "5m").await?;
            let deny = approve(w, "bob", &[], NS, name, "Deny").await?;
            wait_for(w, name, "Denied", SETTLE, settled).await?;
            // The denial is withdrawn (by an admin) and two approvals arrive: the end stays the end.
            Api::<DynamicObject>::namespaced_with(w.admin.clone(), NS, &dynamic("AccessApproval"))
                .delete(&deny, &DeleteParams::default())
                .await
                .map_err(api_error)?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "bob", &[], NS, name, "Approve").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            Observed::request(w.requests().get(name).await.map_err(api_error)?)
        }
        Scenario::ApproveExpired => {
            let name = "approval-after-expiry";
            let granted = granted_manual_request(w, name, "3s").await?;
            let id = grant_id(&granted);
            wait_for(w, name, "Expired", Duration::from_secs(20), |r| phase_of(r).is_some_and(Phase::is_terminal))
                .await?;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "carol", &["jit-approvers"], NS, name, "Approve").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let r = w.requests().get(name).await.map_err(api_error)?;
            if grant_id(&r) != id {
                return Err(Observed::Broken(format!("grant id changed from {id:?} to {:?}", grant_id(&r))));
            }
            Observed::request(r)
        }
        Scenario::ApprovalEdited => {
            let approval = approve(w, "alice", &[], NS, "approval-edited-target", "Approve").await?;
            let api: Api<DynamicObject> = Api::namespaced_with(w.admin.clone(), NS, &dynamic("AccessApproval"));
            match api.patch(&approval, &merge, &Patch::Merge(json!({"spec": {"decision": "Deny"}}))).await {
                Ok(_) => Observed::Accepted("edited AccessApproval".into()),
                Err(e) => api_error(e),
            }
        }
        Scenario::EditAfterApproval(name, patch) => {
            granted_manual_request(w, name, "5m").await?;
            let api: Api<AccessRequest> = Api::namespaced(w.id("waiter").client.clone(), NS);
            match api.patch(name, &merge, &Patch::Merge(patch())).await {
                Ok(_) => Observed::Accepted(format!("edited AccessRequest {name}")),
                Err(e) => api_error(e),
            }
        }
        Scenario::Unrevoke => {
            let name = "un-revoke";
            granted_manual_request(w, name, "5m").await?;
            let api: Api<AccessRequest> = Api::namespaced(w.id("waiter").client.clone(), NS);
            api.patch(name, &merge, &Patch::Merge(json!({"spec": {"revoke": true}}))).await.map_err(api_error)?;
            wait_for(w, name, "Revoked", SETTLE, |r| phase_of(r).is_some_and(Phase::is_terminal)).await?;
            match api.patch(name, &merge, &Patch::Merge(json!({"spec": {"revoke": false}}))).await {
                Ok(_) => Observed::Accepted("un-revoked".into()),
                Err(e) => api_error(e),
            }
        }
        Scenario::ReusedName => {
            let name = "reused-name";
            let first = granted_manual_request(w, name, "5m").await?;
            let old_id = grant_id(&first);
            w.requests().delete(name, &DeleteParams::default()).await.map_err(api_error)?;
            wait_for_gone(w, name).await?;
            next_second().await;
            let again = manual_request(w, name, "5m").await?;
            if phase_of(&again) != Some(Phase::Pending) || !approved_by(&again).is_empty() {
                return Err(Observed::Broken(format!(
                    "the old request's approvals counted for the new one: {}",
                    Observed::request(again).describe()
                )));
            }
            approve(w, "alice", &[], NS, name, "Approve").await?;
            approve(w, "bob", &[], NS, name, "Approve").await?;
            let r = wait_for(w, name, "Granted", SETTLE, settled).await?;
            if grant_id(&r).is_none() || grant_id(&r) == old_id {
                return Err(Observed::Broken(format!("grant id {:?} reused (was {old_id:?})", grant_id(&r))));
            }
            Observed::request(r)
        }
        Scenario::StatusSelfWrite => {
            let name = "status-self-write";
            let s = spec(json!({"namespaces": ["team-d"]}));
            create_request(w, "hostile", NS, name, &Requester::Creator, &s, None).await.map_err(setup)?;
            let api: Api<AccessRequest> = Api::namespaced(w.id("hostile").client.clone(), NS);
            let forged = json!({"status": {"phase": "Granted", "policy": "p-hostile"}});
            match api.patch_status(name, &merge, &Patch::Merge(forged)).await {
                Ok(_) => Observed::Accepted("status written by the requester".into()),
                Err(e) => api_error(e),
            }
        }
        Scenario::DanglingRole(kind, role) => {
            let name = format!("dangling-{}", kind.to_lowercase());
            let s = spec(json!({"role": {"kind": kind, "name": role}}));
            create_request(w, "hostile", NS, &name, &Requester::Creator, &s, None).await.map_err(setup)?;
            let r = wait_for(w, &name, "settled", SETTLE, settled).await?;
            if phase_of(&r) != Some(Phase::Granted) {
                return Ok(Observed::request(r));
            }
            // The binding names the missing role, and lends the grant's identity nothing.
            let grant = r.status.as_ref().and_then(|s| s.grant.clone()).unwrap_or_default();
            let binding = grant
                .objects
                .iter()
                .find(|o| o.kind == "RoleBinding" && o.namespace == "team-a")
                .ok_or_else(|| Observed::Broken("no RoleBinding in team-a".into()))?;
            let rb = Api::<RoleBinding>::namespaced(w.admin.clone(), "team-a")
                .get(&binding.name)
                .await
                .map_err(api_error)?;
            if (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()) != (kind, role) {
                return Err(Observed::Broken(format!("binding refers to {:?}", rb.role_ref)));
            }
            if grant.service_account.is_none() {
                return Err(Observed::Broken("no grant identity".into()));
            }
            // Retries the 403 of the moment before the API server knows the requester may mint.
            let token = scenario::mint_as(&w.id("hostile").client, &r).await.map_err(api_error)?;
            let code = scenario::list_pods_status(&w.cluster.client_with_token(&token), "team-a").await;
            if code != 403 {
                return Err(Observed::Broken(format!("the dangling grant lists pods in team-a: HTTP {code}")));
            }
            Observed::request(r)
        }
        Scenario::Burst => {
            let s = base_spec();
            let names: Vec<String> = (1..=4).map(|i| format!("burst-{i}")).collect();
            let made =
                join_all(names.iter().map(|n| create_request(w, "burster", NS, n, &Requester::Creator, &s, None)));
            for created in made.await {
                created.map_err(setup)?;
            }
            let last = wait_settled(w, &names).await;
            let (granted, rest): (Vec<_>, Vec<_>) =
                last.into_values().partition(|r| phase_of(r) == Some(Phase::Granted));
            // Exactly one may hold a grant; the others must be denied for the limit.
            match (granted.len(), rest.into_iter().next()) {
                (1, Some(denied)) => Observed::request(denied),
                (n, _) if n > 1 => Observed::request(granted[1].clone()),
                (n, _) => Observed::Broken(format!("{n} of 4 granted")),
            }
        }
        Scenario::SameSecondReuse => {
            let name = "same-second-reuse";
            manual_request(w, name, "5m").await?;
            // Start early in a second, so the successor is likely created in the same one.
            start_of_second().await;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            w.requests().delete(name, &DeleteParams::default()).await.map_err(api_error)?;
            wait_for_gone(w, name).await?;
            // The successor asks for something else (an hour, not five minutes).
            // Usually in the same second as the approval; the approval is bound to the old
            // request's uid, so it must not count either way.
            manual_request(w, name, "1h").await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Observed::request(w.requests().get(name).await.map_err(api_error)?)
        }
        Scenario::SameSecondPreApproval => {
            let name = "same-second-pre-approval";
            start_of_second().await;
            approve(w, "alice", &[], NS, name, "Approve").await?;
            // Usually the same second; an approval from before the request never counts.
            manual_request(w, name, "5m").await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Observed::request(w.requests().get(name).await.map_err(api_error)?)
        }
        Scenario::LiveGrantLimit => {
            let s = base_spec();
            create_request(w, "limited", NS, "limit-first", &Requester::Creator, &s, None).await.map_err(setup)?;
            wait_for(w, "limit-first", "Granted", SETTLE, |r| phase_of(r) == Some(Phase::Granted) || settled(r))
                .await?;
            create_request(w, "limited", NS, "limit-second", &Requester::Creator, &s, None).await.map_err(setup)?;
            Observed::request(wait_for(w, "limit-second", "settled", SETTLE, settled).await?)
        }
    })
}

/// A request admitted during a scenario's setup was expected; a refusal there breaks the row.
fn setup(o: Observed) -> Observed {
    Observed::Broken(format!("setup refused: {}", o.describe()))
}

/// Waits for the first 50 ms of a wall-clock second; returns that second.
async fn start_of_second() -> i64 {
    loop {
        let now = jiff::Timestamp::now();
        if now.subsec_millisecond() < 50 {
            return now.as_second();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_gone(w: &World<'_>, name: &str) -> Result<(), Observed> {
    let gone =
        support::eventually(SETTLE, || async { w.requests().get_opt(name).await.ok().flatten().is_none() }).await;
    if gone { Ok(()) } else { Err(Observed::Broken(format!("{name} was not deleted"))) }
}

// ---------------------------------------------------------------- judging

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    Admission,
    Denied,
    FailedClosed,
    Granted,
    NoEffect,
}

fn check(expect: &Expect, observed: &Observed) -> Result<Category, String> {
    match (expect, observed) {
        (Expect::Rejected(code, message), Observed::Rejected { code: c, message: m }) => {
            if c == code && m.contains(message) {
                Ok(Category::Admission)
            } else {
                Err(format!("expected {code} containing {message:?}"))
            }
        }
        (_, Observed::Request(r)) => check_request(expect, r),
        _ => Err("outcome of another kind".into()),
    }
}

fn check_request(expect: &Expect, r: &AccessRequest) -> Result<Category, String> {
    let s = r.status.clone().unwrap_or_default();
    let condition = |t: &str| s.conditions.iter().find(|c| c.type_ == t && c.status == "True");
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let no_live_grant = s.grant.as_ref().is_none_or(|g| g.revoked_at.is_some());
    match expect {
        Expect::Rejected(..) => Err("admitted".into()),
        Expect::Denied(reason, message) => {
            ensure(s.phase == Phase::Denied, "phase Denied")?;
            let c = condition("Denied").ok_or("a Denied condition")?;
            ensure(c.reason == *reason, &format!("Denied reason {reason}"))?;
            ensure(c.message.contains(message.as_str()), &format!("Denied message containing {message:?}"))?;
            ensure(s.grant.is_none(), "no grant recorded")?;
            if *reason == "NoPolicyAllows" {
                // The same words are in status.policyEvaluations.
                let found =
                    s.policy_evaluations.iter().any(|e| format!("{}: {}", e.policy, e.reason).contains(message));
                ensure(found && s.policy_evaluations.iter().all(|e| !e.allowed), "policyEvaluations saying so")?;
            }
            Ok(Category::Denied)
        }
        Expect::Failed(reason, message) => {
            ensure(s.phase == Phase::Failed, "phase Failed")?;
            let c = condition("Failed").ok_or("a Failed condition")?;
            ensure(c.reason == *reason && c.message.contains(message), &format!("Failed {reason}: {message:?}"))?;
            ensure(no_live_grant, "the grant revoked")?;
            Ok(Category::FailedClosed)
        }
        Expect::Revoked(reason, message) => {
            ensure(s.phase == Phase::Revoked, "phase Revoked")?;
            let c = condition("Revoked").ok_or("a Revoked condition")?;
            ensure(c.reason == *reason && c.message.contains(message), &format!("Revoked {reason}: {message:?}"))?;
            ensure(s.grant.is_none(), "never granted")?;
            Ok(Category::FailedClosed)
        }
        Expect::Granted { policy, lasts } => {
            ensure(s.phase == Phase::Granted, "phase Granted")?;
            ensure(condition("Granted").is_some(), "a Granted condition")?;
            ensure(s.policy.as_deref() == Some(policy), &format!("status.policy {policy}"))?;
            let g = s.grant.as_ref().ok_or("a grant")?;
            ensure(!g.objects.is_empty(), "grant objects")?;
            for o in &g.objects {
                let valid = kube_jit::names::is_dns1123_label(&o.name) && o.name.ends_with(&format!("-{}", g.id));
                ensure(valid, &format!("{} is a DNS-1123 label ending in the grant id", o.name))?;
            }
            if let Some(secs) = lasts {
                // The expiry is fixed at approval, the instant the chain's last hop
                // records (delegatedAt), and rounded down to whole seconds; making
                // the grant (startedAt) comes later, however long that takes.
                let approved = s.delegation_chain.last().and_then(|h| h.delegated_at.as_ref()).ok_or("delegatedAt")?;
                let end = g.expires_at.as_ref().ok_or("expiresAt")?;
                let length = end.0.duration_since(approved.0).as_secs();
                ensure((secs - 1..=*secs).contains(&length), &format!("a grant of {secs}s, not {length}s"))?;
            }
            Ok(Category::Granted)
        }
        Expect::Pending(approvers) => {
            ensure(s.phase == Phase::Pending, "phase Pending")?;
            ensure(approved_by(r) == *approvers, &format!("approvedBy {approvers:?}"))?;
            ensure(s.grant.is_none(), "no grant")?;
            Ok(Category::NoEffect)
        }
        Expect::Unchanged(phase) => {
            ensure(s.phase == *phase, &format!("phase still {phase:?}"))?;
            ensure(no_live_grant, "no live grant")?;
            Ok(Category::NoEffect)
        }
    }
}

// ---------------------------------------------------------------- the suite

/// What running a table found.
struct Report {
    tried: usize,
    counts: BTreeMap<Category, usize>,
    /// Rows that did not behave as the table says.
    failures: Vec<String>,
    /// Rows that ended with a live grant the table did not expect.
    mistakes: Vec<String>,
    /// Managed objects left after every remaining grant was revoked.
    left_over: Vec<String>,
}

impl Report {
    fn summary(&self, elapsed: Duration) -> String {
        let n = |c: Category| self.counts.get(&c).copied().unwrap_or(0);
        format!(
            "hostile inputs: {} tried, {} rejected at admission, {} denied by the operator, {} failed closed, {} granted as expected, {} granted by mistake (and {} approvals without effect; {:.1}s)",
            self.tried,
            n(Category::Admission),
            n(Category::Denied),
            n(Category::FailedClosed),
            n(Category::Granted),
            self.mistakes.len(),
            n(Category::NoEffect),
            elapsed.as_secs_f64()
        )
    }
}

/// Runs every row (scenarios alongside the simple rows; simple requests are all
/// created first, then awaited together), judges them, then revokes whatever is
/// still live and looks for managed objects left behind.
async fn run_table(w: &World<'_>, table: &[Row]) -> Report {
    let mut names = std::collections::HashSet::new();
    for row in table {
        assert!(names.insert(row.name.clone()), "duplicate row {}", row.name);
    }
    let scenarios = join_all(table.iter().enumerate().filter_map(|(i, row)| match &row.input {
        Input::Scenario(s) => Some(async move { (i, run_scenario(w, *s).await) }),
        _ => None,
    }));
    let simple = async {
        let mut observed: BTreeMap<usize, Observed> = BTreeMap::new();
        let mut awaited: Vec<(usize, String)> = Vec::new();
        for (i, row) in table.iter().enumerate() {
            match &row.input {
                Input::Request { by, ns, name, requester, spec, status } => {
                    match create_request(w, by, ns, name, requester, spec, status.as_ref()).await {
                        Ok(()) if *ns == NS => awaited.push((i, name.clone())),
                        Ok(()) => {
                            observed.insert(i, Observed::Accepted(format!("AccessRequest {ns}/{name}")));
                        }
                        Err(o) => {
                            observed.insert(i, o);
                        }
                    }
                }
                Input::Object { by, kind, ns, body } => {
                    observed.insert(i, create_object(w, by, kind, *ns, body).await);
                }
                Input::Scenario(_) => {}
            }
        }
        let request_names: Vec<String> = awaited.iter().map(|(_, n)| n.clone()).collect();
        let mut last = wait_settled(w, &request_names).await;
        for (i, name) in awaited {
            let o = last.remove(&name).map(Observed::request).unwrap_or(Observed::Broken(format!("{name} vanished")));
            observed.insert(i, o);
        }
        observed
    };
    let (mut observed, scenario_results) = futures::join!(simple, scenarios);
    observed.extend(scenario_results);

    // Judge every row; report all mismatches at once.
    let mut report =
        Report { tried: table.len(), counts: BTreeMap::new(), failures: vec![], mistakes: vec![], left_over: vec![] };
    for (i, row) in table.iter().enumerate() {
        let o = &observed[&i];
        if o.live_grant() && !matches!(row.expect, Expect::Granted { .. }) {
            report.mistakes.push(row.name.clone());
        }
        match check(&row.expect, o) {
            Ok(category) => {
                *report.counts.entry(category).or_default() += 1;
                eprintln!("  ok   {:<40} {:?}", row.name, row.expect);
            }
            Err(why) => {
                eprintln!("  FAIL {:<40} expected {:?} ({why}); observed {}", row.name, row.expect, o.describe());
                report.failures.push(row.name.clone());
            }
        }
    }

    // Revoke what is still live (the rows rightly granted), then nothing may be left managed.
    let live: Vec<String> = w
        .requests()
        .list(&Default::default())
        .await
        .expect("list requests")
        .items
        .into_iter()
        .filter(|r| !phase_of(r).is_some_and(Phase::is_terminal))
        .map(|r| r.name_any())
        .collect();
    for name in &live {
        w.requests()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}})))
            .await
            .expect("revoke");
    }
    let ended = support::eventually(SETTLE, || async {
        let list = w.requests().list(&Default::default()).await.expect("list requests");
        list.items.iter().all(|r| phase_of(r).is_some_and(Phase::is_terminal))
    })
    .await;
    assert!(ended, "revoked requests did not all end: {live:?}");
    let clean = support::eventually(SETTLE, || async { scenario::managed_objects(&w.admin).await.is_empty() }).await;
    if !clean {
        report.left_over = scenario::managed_objects(&w.admin).await;
    }
    report
}

/// A dedicated control plane with the world of [`world`] and the operator running.
async fn run_on_fresh_cluster(table: Vec<Row>) -> Report {
    let started = Instant::now();
    let cluster = Cluster::dedicated();
    let world = world(&cluster).await;
    let operator = Operator::start(&cluster, &["--sweep-interval", "5"]).await;
    operator.wait_started().await;
    eprintln!("hostile inputs: world ready in {:.1}s", started.elapsed().as_secs_f64());
    let report = run_table(&world, &table).await;
    eprintln!("{}", report.summary(started.elapsed()));
    drop(operator);
    report
}

#[tokio::test]
async fn hostile_inputs_are_refused_and_odd_but_legitimate_ones_work() {
    let mut table = rows();
    table.extend(regression_rows());
    assert!(table.len() >= 55, "only {} rows", table.len());
    let report = run_on_fresh_cluster(table).await;
    assert!(report.mistakes.is_empty(), "granted by mistake: {:?}", report.mistakes);
    assert!(report.failures.is_empty(), "rows that did not behave as the table says: {:?}", report.failures);
    assert!(report.left_over.is_empty(), "managed objects left after revoking every grant: {:?}", report.left_over);
}

/// Regressions: hostile inputs that once got through, each fixed since.
fn regression_rows() -> Vec<Row> {
    vec![
        // PLAIN_TEXT_RULE once excluded C0 controls and DEL but not C1 controls (U+0080-U+009F).
        ask("purpose-c1-next-line", json!({"purpose": "read pods\u{0085}approved: yes"}), schema(NOT_PLAIN)),
        ask("purpose-c1-csi", json!({"purpose": "read pods\u{009B}2J"}), schema(NOT_PLAIN)),
        // A bidirectional control character (Bidi_Control) missing from the rule.
        ask("purpose-arabic-letter-mark", json!({"purpose": "read\u{061C} pods"}), schema(NOT_PLAIN)),
        // Invisible (zero-width) format characters: tag characters smuggle hidden text to LLM readers.
        ask("purpose-tag-characters", json!({"purpose": "read pods\u{E0069}\u{E0067}\u{E006E}"}), schema(NOT_PLAIN)),
        ask("purpose-soft-hyphen", json!({"purpose": "read\u{00AD}pods"}), schema(NOT_PLAIN)),
        // maxLiveGrantsPerSubject was once checked against a cache concurrent decisions did not see.
        scenario(
            "live-grant-limit-burst",
            Scenario::Burst,
            no_policy("p-burst: subject already holds 1 live grants under it (at most 1)"),
        ),
        // Approvals were once matched by name and a creation time with one-second resolution.
        scenario("approvals-of-deleted-request-same-second", Scenario::SameSecondReuse, Expect::Pending(&[])),
        scenario("approvals-before-request-same-second", Scenario::SameSecondPreApproval, Expect::Pending(&[])),
    ]
}
