//! Cilium's monitor message types (`pkg/monitor/api`): what a flow's
//! `event_type.type` holds and what `--type` filters take.

pub const MESSAGE_TYPE_DROP: i32 = 1;
pub const MESSAGE_TYPE_DEBUG: i32 = 2;
pub const MESSAGE_TYPE_CAPTURE: i32 = 3;
pub const MESSAGE_TYPE_TRACE: i32 = 4;
pub const MESSAGE_TYPE_POLICY_VERDICT: i32 = 5;
pub const MESSAGE_TYPE_RECORDER: i32 = 6;
pub const MESSAGE_TYPE_TRACE_SOCK: i32 = 7;
/// L7 proxy access log; Cilium names it `l7`.
pub const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;
pub const MESSAGE_TYPE_AGENT: i32 = 130;

/// `monitorAPI.MessageTypeNames`: the names `cilium monitor --type` and
/// `hubble observe --type` accept, in Cilium's order.
pub const MESSAGE_TYPE_NAMES: &[(&str, i32)] = &[
    ("drop", MESSAGE_TYPE_DROP),
    ("debug", MESSAGE_TYPE_DEBUG),
    ("capture", MESSAGE_TYPE_CAPTURE),
    ("trace", MESSAGE_TYPE_TRACE),
    ("policy-verdict", MESSAGE_TYPE_POLICY_VERDICT),
    ("recorder", MESSAGE_TYPE_RECORDER),
    ("trace-sock", MESSAGE_TYPE_TRACE_SOCK),
    ("l7", MESSAGE_TYPE_ACCESS_LOG),
    ("agent", MESSAGE_TYPE_AGENT),
];

pub fn message_type_name(message_type: i32) -> Option<&'static str> {
    MESSAGE_TYPE_NAMES.iter().find(|(_, t)| *t == message_type).map(|(n, _)| *n)
}

pub fn message_type_by_name(name: &str) -> Option<i32> {
    MESSAGE_TYPE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Hubble's `agentEventSubtypes`: sub types of [`MESSAGE_TYPE_AGENT`]
/// events, as `--type agent:NAME` takes them.
pub const AGENT_EVENT_SUBTYPES: &[(&str, i32)] = &[
    ("unspecified", 0),
    ("message", 1),
    ("agent-started", 2),
    ("endpoint-regenerate-success", 3),
    ("endpoint-regenerate-failure", 4),
    ("policy-updated", 5),
    ("policy-deleted", 6),
    ("endpoint-created", 7),
    ("endpoint-deleted", 8),
    ("ipcache-upserted", 9),
    ("ipcache-deleted", 10),
];

pub fn agent_event_subtype_by_name(name: &str) -> Option<i32> {
    AGENT_EVENT_SUBTYPES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn names_and_numbers_are_cilium_s() {
        assert_eq!(message_type_by_name("drop"), Some(1));
        assert_eq!(message_type_by_name("trace"), Some(4));
        assert_eq!(message_type_by_name("policy-verdict"), Some(5));
        assert_eq!(message_type_by_name("l7"), Some(129));
        assert_eq!(message_type_by_name("agent"), Some(130));
        assert_eq!(message_type_name(MESSAGE_TYPE_ACCESS_LOG), Some("l7"));
        assert_eq!(message_type_name(MESSAGE_TYPE_CAPTURE), Some("capture"));
    }

    #[test]
    fn unknown_names_and_numbers_find_nothing() {
        assert_eq!(message_type_by_name("Drop"), None);
        assert_eq!(message_type_by_name("access-log"), None);
        assert_eq!(message_type_name(0), None);
        assert_eq!(message_type_name(128), None);
    }

    #[test]
    fn agent_event_subtypes_by_name() {
        assert_eq!(agent_event_subtype_by_name("unspecified"), Some(0));
        assert_eq!(agent_event_subtype_by_name("agent-started"), Some(2));
        assert_eq!(agent_event_subtype_by_name("ipcache-deleted"), Some(10));
        assert_eq!(agent_event_subtype_by_name("started"), None);
    }

    #[test]
    fn every_name_and_number_is_unique() {
        assert_unique("message type name", MESSAGE_TYPE_NAMES.iter().map(|(n, _)| *n));
        assert_unique("message type", MESSAGE_TYPE_NAMES.iter().map(|(_, t)| *t));
        assert_unique("agent event name", AGENT_EVENT_SUBTYPES.iter().map(|(n, _)| *n));
        assert_unique("agent event sub type", AGENT_EVENT_SUBTYPES.iter().map(|(_, s)| *s));
    }
}
