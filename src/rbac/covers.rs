//! Decides whether one set of RBAC rules grants everything another set asks for, with exactly the
//! semantics of Kubernetes' escalation check (component-helpers `policy_comparator.go`), so that a
//! grant we approve is one the API server would also let us create without `escalate`.

use k8s_openapi::api::rbac::v1::PolicyRule;

const ALL: &str = "*";

/// True iff every requested rule is granted by `owner`. An empty request is always covered.
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> bool {
    requested.iter().all(|rule| rule_is_covered(owner, rule))
}

/// True iff every atomic part of `requested` is granted by some single owner rule.
pub fn rule_is_covered(owner: &[PolicyRule], requested: &PolicyRule) -> bool {
    breakdown(requested).iter().all(|atom| atom_is_covered(owner, atom))
}

/// The atomic requested rules no owner rule grants, in the same order Kubernetes reports them: per
/// requested rule, resource atoms by group, resource, verb, name, then URL atoms by URL, verb.
/// Not deduplicated (neither is Go's). Empty iff [`covers`] is true.
pub fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    requested.iter().flat_map(breakdown).filter(|atom| !atom_is_covered(owner, atom)).collect()
}

/// Short human text for denial reasons, e.g. `get pods/log in "" (names: a,b)` or `get /healthz*`.
pub fn describe(rule: &PolicyRule) -> String {
    let verbs = if rule.verbs.is_empty() { "(no verbs)".to_string() } else { rule.verbs.join(",") };
    let (groups, resources) = (list(&rule.api_groups), list(&rule.resources));
    let mut parts = Vec::new();
    if !groups.is_empty() || !resources.is_empty() {
        let resources = if resources.is_empty() { "(no resources)".to_string() } else { resources.join(",") };
        // Quoted so the core group shows up as "" rather than vanishing.
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        let mut part = format!("{verbs} {resources} in {}", groups.join(","));
        let names = list(&rule.resource_names);
        if !names.is_empty() {
            part.push_str(&format!(" (names: {})", names.join(",")));
        }
        parts.push(part);
    }
    let urls = list(&rule.non_resource_urls);
    if !urls.is_empty() {
        parts.push(format!("{verbs} {}", urls.join(",")));
    }
    if parts.is_empty() { format!("{verbs} (nothing)") } else { parts.join("; ") }
}

// Kubernetes treats a missing list and an empty list the same way.
fn list(field: &Option<Vec<String>>) -> &[String] {
    field.as_deref().unwrap_or(&[])
}

fn has(set: &[String], wanted: &str) -> bool {
    set.iter().any(|s| s == wanted)
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn atom_is_covered(owner: &[PolicyRule], atom: &PolicyRule) -> bool {
    owner.iter().any(|rule| rule_covers(rule, atom))
}

/// Splits a rule into rules with one verb, group, resource and name (or one URL and one verb).
/// Because atoms are this fine, each is either wholly granted by one owner rule or not at all,
/// which is what lets permissions spread over several owner rules combine. Like Go, a rule with
/// no verbs (or no groups, or no resources and no URLs) yields nothing and so asks for nothing.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| Some(vec![s.clone()]);
    let mut atoms = Vec::new();
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let atom = PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    ..PolicyRule::default()
                };
                let names = list(&rule.resource_names);
                if names.is_empty() {
                    atoms.push(atom);
                } else {
                    atoms.extend(names.iter().map(|n| PolicyRule { resource_names: one(n), ..atom.clone() }));
                }
            }
        }
    }
    // Non-resource URLs combine only with verbs.
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            atoms.push(PolicyRule { non_resource_urls: one(url), verbs: vec![verb.clone()], ..PolicyRule::default() });
        }
    }
    atoms
}

/// Go's `ruleCovers`: `owner` may be any rule, `atom` comes from [`breakdown`]. A requested `*`
/// is only matched by an owner `*`, because an enumeration never grants future verbs/groups/kinds.
fn rule_covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &atom.verbs);
    let (owner_groups, atom_groups) = (list(&owner.api_groups), list(&atom.api_groups));
    let groups = has(owner_groups, ALL) || has_all(owner_groups, atom_groups);
    let resources = resources_cover_all(list(&owner.resources), list(&atom.resources));
    let owner_urls = list(&owner.non_resource_urls);
    let urls = list(&atom.non_resource_urls).iter().all(|p| owner_urls.iter().any(|o| url_covers(o, p)));
    let (owner_names, atom_names) = (list(&owner.resource_names), list(&atom.resource_names));
    // A request without names means "every name", which only a name-unrestricted owner grants.
    let names = owner_names.is_empty() || (!atom_names.is_empty() && has_all(owner_names, atom_names));
    verbs && groups && resources && names && urls
}

/// `*` grants every resource and subresource; `*/sub` grants subresource `sub` of any resource;
/// otherwise only an exact match counts, so `pods` does not grant `pods/log`.
fn resources_cover_all(owner: &[String], wanted: &[String]) -> bool {
    has(owner, ALL)
        || wanted.iter().all(|path| {
            has(owner, path) || path.split_once('/').is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
        })
}

/// Exact match, or prefix match when the owner pattern ends in `*`. Applied to the requested
/// pattern as a plain string, so a requested `/foo*` needs an owner pattern matching the text `/foo*`.
fn url_covers(owner: &str, path: &str) -> bool {
    owner == path || (owner.ends_with('*') && path.starts_with(owner.trim_end_matches('*')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A resource rule; empty `names` means no resourceNames field.
    fn r(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: Some(strings(groups)),
            resources: Some(strings(resources)),
            resource_names: (!names.is_empty()).then(|| strings(names)),
            non_resource_urls: None,
        }
    }

    fn u(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule { verbs: strings(verbs), non_resource_urls: Some(strings(urls)), ..PolicyRule::default() }
    }

    fn with_urls(rule: PolicyRule, urls: &[&str]) -> PolicyRule {
        PolicyRule { non_resource_urls: Some(strings(urls)), ..rule }
    }

    type Case = (String, Vec<PolicyRule>, Vec<PolicyRule>, bool);

    fn one(name: &str, owner: PolicyRule, requested: PolicyRule, want: bool) -> Case {
        (name.to_string(), vec![owner], vec![requested], want)
    }

    #[test]
    fn table() {
        let (g, d, up) = (&["get"][..], &["delete"][..], &["update"][..]);
        let go_url_cases = [
            ("*", "", true),
            ("*", "/", true),
            ("*", "/api", true),
            ("/*", "", false),
            ("/*", "/", true),
            ("/*", "/foo", true),
            ("/api", "/api", true),
            ("/apis", "/api", false),
            ("/api/v1", "/api", false),
            ("/api/v1", "/api/v1", true),
            ("/api/*", "/api/v1", true),
            ("/api/*", "/api", false),
            ("/api/*/*", "/api/v1", false),
            ("/*/v1/*", "/api/v1", false),
        ];
        let mut cases: Vec<Case> = go_url_cases
            .iter()
            .map(|&(o, p, want)| one(&format!("go url {o:?} vs {p:?}"), u(g, &[o]), u(g, &[p]), want))
            .collect();
        let (bd, du) = (&["builds", "deployments"][..], &["delete", "update"][..]);
        let (v1, core) = (&["v1"][..], &[""][..]);
        cases.extend([
            one("go exact match", r(g, v1, &["builds"], &[]), r(g, v1, &["builds"], &[]), true),
            one("go subresource wildcard", r(g, v1, &["*/scale"], &[]), r(g, v1, &["foo/scale"], &[]), true),
            (
                "go multiple rules covering single rule".into(),
                vec![r(d, v1, &["deployments"], &[]), r(d, v1, &["builds"], &[]), r(up, v1, bd, &[])],
                vec![r(du, v1, bd, &[])],
                true,
            ),
            (
                "go multiple api groups covering single rule".into(),
                ["group1", "group2"]
                    .into_iter()
                    .flat_map(|grp| [r(d, &[grp], bd, &[]), r(up, &[grp], bd, &[])])
                    .collect(),
                vec![r(du, &["group1", "group2"], bd, &[])],
                true,
            ),
            (
                "go single api groups covering multiple".into(),
                vec![r(du, &["group1", "group2"], bd, &[])],
                vec![r(d, &["group1"], &["deployments"], &[]), r(up, &["group2"], bd, &[])],
                true,
            ),
            (
                "go missing single verb resource combination".into(),
                vec![r(du, v1, bd, &[]), r(d, v1, &["pods"], &[])],
                vec![r(du, v1, &["builds", "deployments", "pods"], &[])],
                false,
            ),
            one(
                "go group star covering multiple",
                r(g, &["*"], &["roles"], &[]),
                r(g, &["g1", "g2"], &["roles"], &[]),
                true,
            ),
            one(
                "go enumeration not covering group star",
                r(g, &["dummy"], &["roles"], &[]),
                r(g, &["*"], &["roles"], &[]),
                false,
            ),
            one("go group star covering star", r(g, &["*"], &["roles"], &[]), r(g, &["*"], &["roles"], &[]), true),
            one(
                "go verb star covering multiple",
                r(&["*"], v1, &["roles"], &[]),
                r(&["watch", "list"], v1, &["roles"], &[]),
                true,
            ),
            one(
                "go enumeration not covering verb star",
                r(&["get", "list", "watch", "create", "update", "delete", "exec"], v1, &["roles"], &[]),
                r(&["*"], v1, &["roles"], &[]),
                false,
            ),
            one("go verb star covering star", r(&["*"], v1, &["roles"], &[]), r(&["*"], v1, &["roles"], &[]), true),
            one("go resource star covering multiple", r(g, v1, &["*"], &[]), r(g, v1, &["rg:deployments"], &[]), true),
            one(
                "go enumeration not covering resource star",
                r(g, v1, &["roles", "rg:d"], &[]),
                r(g, v1, &["*"], &[]),
                false,
            ),
            one("go resource star covering star", r(g, v1, &["*"], &[]), r(g, v1, &["*"], &[]), true),
            one("go no names covering names", r(g, v1, &["pods"], &[]), r(g, v1, &["pods"], &["foo", "bar"]), true),
            one(
                "go names not covering no names",
                r(g, v1, &["pods"], &["foo", "bar"]),
                r(g, v1, &["pods"], &[]),
                false,
            ),
            one("go non-resource urls", u(&["*"], &["/apis"]), u(&["*"], &["/apis"]), true),
            one("go non-resource urls star", u(&["*"], &["*"]), u(&["*"], &["/apis", "/apis/v1", "/"]), true),
            one("go star after prefix doesn't cover", u(&["*"], &["/apis/*"]), u(g, &["/apis", "/apis/v1"]), false),
            one("go star after prefix", u(&["*"], &["/apis/*"]), u(g, &["/apis/v1/foo", "/apis/v1"]), true),
            one(
                "go urls with other fields",
                with_urls(r(g, v1, &["builds"], &[]), &["/apis"]),
                with_urls(r(g, v1, &["builds"], &[]), &["/apis"]),
                true,
            ),
            one(
                "go urls with other fields failure",
                r(g, v1, &["builds"], &[]),
                with_urls(r(g, v1, &["builds"], &[]), &["/apis"]),
                false,
            ),
            one("pods does not cover pods/log", r(g, core, &["pods"], &[]), r(g, core, &["pods/log"], &[]), false),
            one("*/log covers pods/log", r(g, core, &["*/log"], &[]), r(g, core, &["pods/log"], &[]), true),
            one("*/log does not cover pods", r(g, core, &["*/log"], &[]), r(g, core, &["pods"], &[]), false),
            one("pods/log does not cover */log", r(g, core, &["pods/log"], &[]), r(g, core, &["*/log"], &[]), false),
            one("* covers subresources", r(g, core, &["*"], &[]), r(g, core, &["pods/log", "*/exec"], &[]), true),
            one("listed names cover a subset", r(g, core, &["pods"], &["a", "b"]), r(g, core, &["pods"], &["a"]), true),
            one("listed names miss one", r(g, core, &["pods"], &["a"]), r(g, core, &["pods"], &["a", "b"]), false),
            (
                "names combine across owner rules".into(),
                vec![r(g, core, &["pods"], &["a"]), r(g, core, &["pods"], &["b"])],
                vec![r(g, core, &["pods"], &["a", "b"])],
                true,
            ),
            (
                "each atom needs one owner rule".into(),
                vec![r(g, &["apps"], &["pods"], &[]), r(g, core, &["deployments"], &[])],
                vec![r(g, core, &["pods"], &[])],
                false,
            ),
            ("empty request is covered".into(), vec![], vec![], true),
            ("empty owner covers nothing".into(), vec![], vec![r(g, core, &["pods"], &[])], false),
            ("no verbs asks for nothing".into(), vec![], vec![r(&[], core, &["pods"], &[])], true),
            one("exact url does not cover pattern", u(g, &["/healthz"]), u(g, &["/healthz*"]), false),
            one("wider pattern covers pattern", u(g, &["/h*"]), u(g, &["/healthz*"]), true),
            one("/* does not cover *", u(g, &["/*"]), u(g, &["*"]), false),
            one("url-only owner grants no resources", u(&["*"], &["*"]), r(g, core, &["pods"], &[]), false),
            one("resource-only owner grants no urls", r(&["*"], &["*"], &["*"], &[]), u(g, &["/healthz"]), false),
        ]);
        assert!(cases.len() >= 30);
        for (name, owner, requested, want) in &cases {
            assert_eq!(covers(owner, requested), *want, "{name}");
            assert_eq!(uncovered(owner, requested).is_empty(), *want, "{name}");
        }
    }

    #[test]
    fn uncovered_lists_atoms_in_order() {
        let owner = [r(&["delete", "update"], &["v1"], &["builds"], &[]), r(&["delete"], &["v1"], &["pods"], &[])];
        let requested = [r(&["delete", "update"], &["v1"], &["builds", "pods"], &["a"]), u(&["get"], &["/x", "/y"])];
        let want = vec![r(&["update"], &["v1"], &["pods"], &["a"]), u(&["get"], &["/x"]), u(&["get"], &["/y"])];
        assert_eq!(uncovered(&owner, &requested), want);
        // Go reports a name-less atom, not the empty names list of the request.
        let owner = [r(&["get"], &["v1"], &["pods"], &["foo"])];
        assert_eq!(
            uncovered(&owner, &[r(&["get"], &["v1"], &["pods"], &[])]),
            vec![r(&["get"], &["v1"], &["pods"], &[])]
        );
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(&r(&["get"], &[""], &["pods/log"], &["a", "b"])), r#"get pods/log in "" (names: a,b)"#);
        assert_eq!(describe(&u(&["get"], &["/healthz*"])), "get /healthz*");
        assert_eq!(describe(&r(&["get", "list"], &["", "apps"], &["*"], &[])), r#"get,list * in "","apps""#);
        assert_eq!(describe(&PolicyRule::default()), "(no verbs) (nothing)");
    }

    fn pick(options: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> + Clone {
        prop::collection::vec(prop::sample::select(options).prop_map(String::from), 1..=max)
    }

    /// Only valid rules (Kubernetes rejects URLs mixed with groups, resources or names); a URL
    /// rule carrying names would not even cover itself.
    fn rule() -> impl Strategy<Value = PolicyRule> {
        let verbs = pick(&["get", "list", "*"], 2);
        let resource = (
            verbs.clone(),
            pick(&["", "apps", "*"], 2),
            pick(&["pods", "pods/log", "*/log", "*", "deployments"], 2),
            prop::option::of(prop::collection::vec(
                prop::sample::select(&["a", "b"][..]).prop_map(String::from),
                0..=2,
            )),
        )
            .prop_map(|(verbs, groups, resources, names)| PolicyRule {
                verbs,
                api_groups: Some(groups),
                resources: Some(resources),
                resource_names: names,
                non_resource_urls: None,
            });
        let url = (verbs, pick(&["/healthz", "/healthz*", "/api", "/api/v1", "/api*", "*"], 2))
            .prop_map(|(verbs, urls)| PolicyRule { verbs, non_resource_urls: Some(urls), ..PolicyRule::default() });
        prop_oneof![3 => resource, 1 => url]
    }

    fn rules(max: usize) -> impl Strategy<Value = Vec<PolicyRule>> {
        prop::collection::vec(rule(), 0..=max)
    }

    proptest! {
        #[test]
        fn reflexive(rule in rule()) {
            prop_assert!(covers(std::slice::from_ref(&rule), std::slice::from_ref(&rule)));
        }

        #[test]
        fn set_covers_each_own_rule(set in rules(4)) {
            for rule in &set {
                prop_assert!(rule_is_covered(&set, rule), "{}", describe(rule));
            }
            prop_assert!(covers(&set, &set));
        }

        #[test]
        fn transitive(a in rules(4), b in rules(3), c in rules(4)) {
            // Keep only what each level covers so both premises hold without rejecting cases;
            // reusing A's and B's rules keeps the filtered sets from being mostly empty.
            let b: Vec<_> = b.into_iter().chain(a.iter().take(2).cloned()).filter(|x| rule_is_covered(&a, x)).collect();
            let c: Vec<_> = c.into_iter().chain(b.iter().take(2).cloned()).filter(|x| rule_is_covered(&b, x)).collect();
            prop_assert!(covers(&a, &b) && covers(&b, &c));
            prop_assert!(covers(&a, &c), "A={a:?} C={c:?}");
        }

        #[test]
        fn more_owner_rules_never_remove_coverage(a in rules(3), extra in rules(3), req in rules(3)) {
            let wider: Vec<_> = a.iter().chain(&extra).cloned().collect();
            let req: Vec<_> = req.into_iter().chain(a.first().cloned()).collect();
            for rule in &req {
                prop_assert!(!rule_is_covered(&a, rule) || rule_is_covered(&wider, rule), "{}", describe(rule));
            }
            prop_assert!(!covers(&a, &req) || covers(&wider, &req));
        }

        #[test]
        fn uncovered_is_empty_iff_covered(owner in rules(4), req in rules(3)) {
            let missing = uncovered(&owner, &req);
            prop_assert_eq!(missing.is_empty(), covers(&owner, &req));
            prop_assert_eq!(covers(&owner, &req), req.iter().all(|x| rule_is_covered(&owner, x)));
            for atom in &missing {
                prop_assert!(!rule_is_covered(&owner, atom), "{}", describe(atom));
            }
        }
    }
}
