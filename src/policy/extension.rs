//! Whether a live grant may be extended, free of I/O: only where its policy
//! allows extension, at most `maxExtensions` times, never past the policy's
//! maximum duration counted from the grant's start, and never past the parent
//! grant of a delegated one.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::access_policy::{AccessPolicySpec, ExtensionRule};
use crate::durations;

/// What an extension is decided on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The policy the grant was made under (`None`: it no longer exists).
    pub policy: Option<(&'a str, &'a AccessPolicySpec)>,
    /// The instant the grant's life is counted from (its approval).
    pub granted_at: Timestamp,
    /// The grant's current expiry.
    pub expires_at: Timestamp,
    /// Extensions already granted.
    pub granted_before: usize,
    /// The parent grant's expiry, for a delegated grant.
    pub parent_expires_at: Option<Timestamp>,
    pub now: Timestamp,
}

/// The new expiry if extending by `by` is allowed; otherwise why not.
pub fn decide(by: &str, facts: &Facts) -> Result<Timestamp, String> {
    let by = durations::parse(by).map_err(|e| e.to_string())?;
    if facts.now >= facts.expires_at {
        return Err(format!("the grant already ended at {}", facts.expires_at));
    }
    let Some((name, policy)) = facts.policy else {
        return Err("the policy it was granted under no longer exists".into());
    };
    let rule: &ExtensionRule = &policy.extension;
    if !rule.allowed {
        return Err(format!("policy {name} does not allow extension"));
    }
    let most = rule.max_extensions.unwrap_or(ExtensionRule::DEFAULT_MAX).max(0) as usize;
    if facts.granted_before >= most {
        return Err(format!("already extended {} times (policy {name} allows {most})", facts.granted_before));
    }
    let max = durations::parse(&policy.duration.max).map_err(|e| format!("policy {name}'s maximum is invalid: {e}"))?;
    let new_expiry = facts.expires_at + signed(by);
    let life = Duration::try_from(new_expiry.duration_since(facts.granted_at)).unwrap_or_default();
    if life > max {
        return Err(format!(
            "the grant would last {} in all, more than policy {name}'s maximum {}",
            durations::format(round_up(life)),
            durations::format(max)
        ));
    }
    if let Some(parent) = facts.parent_expires_at
        && new_expiry > parent
    {
        return Err(format!("a delegated grant cannot outlive its parent grant, which ends at {parent}"));
    }
    Ok(new_expiry)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn round_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_policy::{DurationLimits, GrantScope, Subjects};

    fn policy(allowed: bool, max_extensions: Option<i32>, max: &str) -> AccessPolicySpec {
        AccessPolicySpec {
            subjects: Subjects::default(),
            grants: GrantScope::default(),
            duration: DurationLimits { default: "15m".into(), max: max.into() },
            approval: Default::default(),
            purpose: Default::default(),
            limits: Default::default(),
            delegation: Default::default(),
            extension: ExtensionRule { allowed, max_extensions },
            delivery: Default::default(),
        }
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
    }

    fn facts(policy: &AccessPolicySpec) -> Facts<'_> {
        Facts {
            policy: Some(("p", policy)),
            granted_at: at(0),
            expires_at: at(15),
            granted_before: 0,
            parent_expires_at: None,
            now: at(10),
        }
    }

    #[test]
    fn extends_within_the_maximum() {
        let p = policy(true, None, "1h");
        assert_eq!(decide("15m", &facts(&p)), Ok(at(30)));
        assert_eq!(decide("45m", &facts(&p)), Ok(at(60)), "exactly the maximum is allowed");
    }

    #[test]
    fn refusals_say_why() {
        let open = policy(true, Some(2), "1h");
        let closed = policy(false, None, "1h");
        let cases: Vec<(&str, &str, Facts, &str)> = vec![
            ("not allowed", "15m", facts(&closed), "does not allow extension"),
            ("past the maximum", "46m", facts(&open), "would last 1h1m in all, more than policy p's maximum 1h"),
            ("too often", "1m", Facts { granted_before: 2, ..facts(&open) }, "already extended 2 times"),
            ("after the end", "1m", Facts { now: at(15), ..facts(&open) }, "already ended"),
            ("policy gone", "1m", Facts { policy: None, ..facts(&open) }, "no longer exists"),
            ("past the parent", "10m", Facts { parent_expires_at: Some(at(20)), ..facts(&open) }, "outlive its parent"),
            ("malformed", "15 minutes", facts(&open), "must look like"),
            ("zero", "0s", facts(&open), "more than zero"),
        ];
        for (case, by, f, want) in cases {
            let got = decide(by, &f).expect_err(case);
            assert!(got.contains(want), "{case}: {got:?} should contain {want:?}");
        }
    }

    #[test]
    fn default_allows_three() {
        let p = policy(true, None, "10h");
        assert!(decide("1m", &Facts { granted_before: 2, ..facts(&p) }).is_ok());
        assert!(decide("1m", &Facts { granted_before: 3, ..facts(&p) }).is_err());
    }
}
