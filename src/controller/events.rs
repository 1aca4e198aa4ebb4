//! Events on kube-jit's objects (`events.k8s.io/v1`), created directly rather
//! than through kube's `Recorder`. The Recorder keeps every Event it published
//! in the last six minutes to aggregate repeats into a series, and scans that
//! whole cache on every publish. kube-jit's Events are each one transition of
//! one object, so they never repeat: the cache bought nothing and cost memory
//! and a scan per Event that grew with the burst (quadratic across thousands
//! of grants).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// The API server refuses an Event note longer than this (bytes).
const NOTE_MAX: usize = 1024;

/// Publishes Events as one reporting controller instance.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// `instance` is the pod name in a cluster; the controller name otherwise.
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Publisher {
        let instance = instance.filter(|i| !i.is_empty()).unwrap_or_else(|| controller.to_string());
        Publisher { client, controller: controller.to_string(), instance }
    }

    /// One Event about `regarding`, named like client-go's (`<object>.<hex nanoseconds>`).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        action: &str,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let object = regarding.name.as_deref().unwrap_or("object");
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(truncate(note, NOTE_MAX)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}

/// `note` cut to at most `max` bytes, on a character boundary, marked with "…".
fn truncate(mut note: String, max: usize) -> String {
    if note.len() <= max {
        return note;
    }
    let mut end = max - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), NOTE_MAX), "short");
        let cut = truncate("é".repeat(600), NOTE_MAX);
        assert!(cut.len() <= NOTE_MAX && cut.ends_with('…'), "{} bytes", cut.len());
    }
}
