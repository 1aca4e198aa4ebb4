//! An index of the AccessRequest cache, kept from the same watch: for each
//! subject (the agent a request acts for, else its requester), its live
//! grants per policy and its requests in creation order. A decision reads
//! what it needs about one subject in O(log n) instead of scanning every
//! request in the cluster (which made each decision O(n), and a start-up wave
//! of n live grants O(n²)).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::access_request::{AccessRequest, Phase};

/// Where a request stands in its subject's order: creation time, then name
/// (timestamps have whole seconds), then uid.
type Order = (Option<Timestamp>, String, String);

/// What the index keeps of one request.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    subject: String,
    order: Order,
    /// The policy of its grant while the grant is live (`Approved` or `Granted`).
    live_policy: Option<String>,
}

impl Entry {
    fn of(request: &AccessRequest) -> Entry {
        let status = request.status.as_ref();
        let live = status.is_some_and(|s| matches!(s.phase, Phase::Granted | Phase::Approved));
        Entry {
            subject: super::context::subject_key(request),
            order: order(request),
            live_policy: status.and_then(|s| s.policy.clone()).filter(|_| live),
        }
    }
}

/// A request's place in its subject's order.
fn order(request: &AccessRequest) -> Order {
    (request.creation_timestamp().map(|t| t.0), request.name_any(), request.uid().unwrap_or_default())
}

#[derive(Default, Debug)]
struct Subject {
    live: HashMap<String, usize>,
    requests: BTreeSet<Order>,
}

#[derive(Default, Debug)]
struct Inner {
    entries: HashMap<String, Entry>,
    subjects: HashMap<String, Subject>,
    /// A relist in progress: the entries it has delivered so far.
    relist: Option<HashMap<String, Entry>>,
}

impl Inner {
    fn insert(&mut self, uid: String, entry: Entry) {
        self.remove(&uid);
        let subject = self.subjects.entry(entry.subject.clone()).or_default();
        subject.requests.insert(entry.order.clone());
        if let Some(policy) = &entry.live_policy {
            *subject.live.entry(policy.clone()).or_insert(0) += 1;
        }
        self.entries.insert(uid, entry);
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.entries.remove(uid) else { return };
        let Some(subject) = self.subjects.get_mut(&old.subject) else { return };
        subject.requests.remove(&old.order);
        if let Some(policy) = &old.live_policy
            && let Some(n) = subject.live.get_mut(policy)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                subject.live.remove(policy);
            }
        }
        if subject.requests.is_empty() {
            self.subjects.remove(&old.subject);
        }
    }
}

/// What a decision needs to know about the other requests of its subject.
#[derive(Debug, Default, PartialEq)]
pub struct SubjectFacts {
    /// Live grants per policy, the request's own left out.
    pub live_grants: BTreeMap<String, usize>,
    /// Creation times of the requests ordered before it, created after `since`.
    pub earlier_requests: Vec<Timestamp>,
}

/// The index; fed every event of the requests' watch ([`RequestIndex::observe`]).
#[derive(Default, Debug)]
pub struct RequestIndex {
    inner: Mutex<Inner>,
}

impl RequestIndex {
    /// Applies one watch event, as the reflector applies it to its store: a
    /// relist (`Init` … `InitDone`) replaces everything when it completes.
    pub fn observe(&self, event: &watcher::Event<AccessRequest>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(r) => inner.insert(r.uid().unwrap_or_default(), Entry::of(r)),
            watcher::Event::Delete(r) => inner.remove(&r.uid().unwrap_or_default()),
            watcher::Event::Init => inner.relist = Some(HashMap::new()),
            watcher::Event::InitApply(r) => {
                inner.relist.get_or_insert_with(HashMap::new).insert(r.uid().unwrap_or_default(), Entry::of(r));
            }
            watcher::Event::InitDone => {
                let listed = inner.relist.take().unwrap_or_default();
                let mut fresh = Inner::default();
                for (uid, entry) in listed {
                    fresh.insert(uid, entry);
                }
                *inner = fresh;
            }
        }
    }

    /// The facts about `request`'s subject: its other live grants, and its
    /// requests ordered before this one that were created after `since`
    /// (none asked for when `since` is `None`).
    pub fn subject_facts(&self, request: &AccessRequest, since: Option<Timestamp>) -> SubjectFacts {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = Entry::of(request);
        let Some(subject) = inner.subjects.get(&mine.subject) else { return SubjectFacts::default() };
        let mut live_grants: BTreeMap<String, usize> = subject.live.iter().map(|(p, n)| (p.clone(), *n)).collect();
        let uid = request.uid().unwrap_or_default();
        if let Some(policy) = inner.entries.get(&uid).and_then(|e| e.live_policy.as_ref())
            && let Some(n) = live_grants.get_mut(policy)
        {
            *n = n.saturating_sub(1);
        }
        live_grants.retain(|_, n| *n > 0);
        let earlier_requests = match since {
            None => Vec::new(),
            Some(since) => {
                let (created, name, _) = mine.order;
                // Strictly before (created, name): same second and name (another
                // namespace) does not count, as before.
                let end = (created, name, String::new());
                let start = (Some(since), String::new(), String::new());
                if start >= end {
                    Vec::new()
                } else {
                    subject.requests.range(start..end).filter_map(|(t, _, _)| t.filter(|t| *t > since)).collect()
                }
            }
        };
        SubjectFacts { live_grants, earlier_requests }
    }

    /// Whether the index shows request `uid` with a live grant.
    pub fn is_live(&self, uid: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(uid).is_some_and(|e| e.live_policy.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_request::AccessRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn request(name: &str, user: &str, second: i64, live_under: Option<&str>) -> AccessRequest {
        let mut r: AccessRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": name, "namespace": "agents", "uid": format!("uid-{name}")},
            "spec": {"requester": {"user": user}, "namespaces": ["team-a"]}}))
        .unwrap();
        r.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_800_000_000 + second).unwrap()));
        r.status = live_under.map(|p| AccessRequestStatus {
            phase: Phase::Granted,
            policy: Some(p.into()),
            ..AccessRequestStatus::default()
        });
        r
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn a_subject_sees_its_own_live_grants_and_earlier_requests_only() {
        let index = RequestIndex::default();
        for r in [
            request("a", "alice", 0, Some("p")),
            request("b", "alice", 10, Some("p")),
            request("c", "alice", 20, Some("q")),
            request("d", "alice", 30, None),
            request("x", "bob", 5, Some("p")),
        ] {
            index.observe(&watcher::Event::Apply(r));
        }
        let me = request("e", "alice", 40, None);
        let facts = index.subject_facts(&me, Some(at(5)));
        assert_eq!(facts.live_grants, BTreeMap::from([("p".into(), 2), ("q".into(), 1)]));
        // After `since` (strictly) and before the request: b, c, d.
        assert_eq!(facts.earlier_requests, vec![at(10), at(20), at(30)]);
        assert!(index.subject_facts(&me, None).earlier_requests.is_empty(), "not asked for");

        // A live request does not count against itself, nor later ones before it.
        let b = request("b", "alice", 10, Some("p"));
        let facts = index.subject_facts(&b, Some(at(-100)));
        assert_eq!(facts.live_grants, BTreeMap::from([("p".into(), 1), ("q".into(), 1)]));
        assert_eq!(facts.earlier_requests, vec![at(0)]);

        // A grant that ends, and a request that goes, stop counting.
        index.observe(&watcher::Event::Apply(request("a", "alice", 0, None)));
        index.observe(&watcher::Event::Delete(request("c", "alice", 20, Some("q"))));
        let facts = index.subject_facts(&me, Some(at(-100)));
        assert_eq!(facts.live_grants, BTreeMap::from([("p".into(), 1)]));
        assert_eq!(facts.earlier_requests, vec![at(0), at(10), at(30)]);
        assert!(index.is_live("uid-b") && !index.is_live("uid-a") && !index.is_live("uid-c"));
    }

    #[test]
    fn a_relist_replaces_everything_when_it_completes() {
        let index = RequestIndex::default();
        index.observe(&watcher::Event::Apply(request("gone", "alice", 0, Some("p"))));
        index.observe(&watcher::Event::Init);
        index.observe(&watcher::Event::InitApply(request("kept", "alice", 1, Some("p"))));
        // Until the relist completes, the index answers as before.
        assert!(index.is_live("uid-gone") && !index.is_live("uid-kept"));
        index.observe(&watcher::Event::InitDone);
        assert!(!index.is_live("uid-gone") && index.is_live("uid-kept"));
        let facts = index.subject_facts(&request("new", "alice", 9, None), Some(at(-1)));
        assert_eq!(facts.live_grants, BTreeMap::from([("p".into(), 1)]));
        assert_eq!(facts.earlier_requests, vec![at(1)]);
    }
}
