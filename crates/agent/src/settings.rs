//! Runtime settings (`twill config set KEY=VALUE`): parsed and checked
//! here, without side effects, before the agent applies any of them.

use crate::error::AgentError;

/// What a `config set` asks for; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub debug_datapath: Option<bool>,
}

/// The settings `config set` knows, for error messages.
const KNOWN: &[&str] = &["debug-datapath"];

/// What an `endpoint config` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSettingsChange {
    pub debug: Option<bool>,
}

/// `KEY=VALUE` items of `endpoint config`; empty reads the settings only.
pub fn parse_endpoint(settings: &[String]) -> Result<EndpointSettingsChange, AgentError> {
    let mut change = EndpointSettingsChange::default();
    for setting in settings {
        let Some((key, value)) = setting.split_once('=') else {
            return Err(AgentError::Invalid(format!("setting {setting:?}: expected KEY=VALUE")));
        };
        // Cilium spells the option `Debug`.
        match key.trim().to_ascii_lowercase().as_str() {
            "debug" => change.debug = Some(boolean("debug", value.trim())?),
            _ => {
                return Err(AgentError::Invalid(format!(
                    "endpoint setting {:?}: unknown (known: debug)",
                    key.trim()
                )))
            }
        }
    }
    Ok(change)
}

fn boolean(key: &str, value: &str) -> Result<bool, AgentError> {
    // Cilium's `cilium config` takes Enabled/Disabled as well.
    match value.to_ascii_lowercase().as_str() {
        "true" | "enabled" | "on" => Ok(true),
        "false" | "disabled" | "off" => Ok(false),
        _ => {
            Err(AgentError::Invalid(format!("setting {key}: {value:?} is not a boolean (use true or false)")))
        }
    }
}

pub fn parse(settings: &[String]) -> Result<SettingsChange, AgentError> {
    if settings.is_empty() {
        return Err(AgentError::Invalid(format!(
            "no setting given (KEY=VALUE; known: {})",
            KNOWN.join(", ")
        )));
    }
    let mut change = SettingsChange::default();
    for setting in settings {
        let Some((key, value)) = setting.split_once('=') else {
            return Err(AgentError::Invalid(format!("setting {setting:?}: expected KEY=VALUE")));
        };
        match key.trim() {
            "debug-datapath" => change.debug_datapath = Some(boolean("debug-datapath", value.trim())?),
            other => {
                return Err(AgentError::Invalid(format!(
                    "setting {other:?}: unknown (known: {})",
                    KNOWN.join(", ")
                )))
            }
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(items: &[&str]) -> Result<SettingsChange, String> {
        parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(|e| e.to_string())
    }

    #[test]
    fn booleans_in_cilium_s_spellings() {
        assert_eq!(parsed(&["debug-datapath=true"]).unwrap().debug_datapath, Some(true));
        assert_eq!(parsed(&["debug-datapath=Disabled"]).unwrap().debug_datapath, Some(false));
        assert_eq!(parsed(&["debug-datapath = on"]).unwrap().debug_datapath, Some(true));
    }

    #[test]
    fn endpoint_settings() {
        let parse = |items: &[&str]| {
            parse_endpoint(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&["Debug=Enabled"]).unwrap().debug, Some(true));
        assert_eq!(parse(&["debug=false"]).unwrap().debug, Some(false));
        assert_eq!(parse(&[]).unwrap(), EndpointSettingsChange::default(), "empty: read only");
        let e = parse(&["debug=yes please"]).unwrap_err();
        assert!(e.contains("debug") && e.contains("not a boolean"), "{e}");
        assert!(parse(&["Conntrack=true"]).unwrap_err().contains("unknown"));
    }

    #[test]
    fn bad_settings_name_the_field_and_the_reason() {
        let e = parsed(&["debug-datapath=maybe"]).unwrap_err();
        assert!(e.contains("debug-datapath") && e.contains("not a boolean"), "{e}");
        let e = parsed(&["debug-lb=true"]).unwrap_err();
        assert!(e.contains("\"debug-lb\"") && e.contains("unknown"), "{e}");
        let e = parsed(&["debug-datapath"]).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
        assert!(parsed(&[]).unwrap_err().contains("no setting"));
        // All or nothing: one bad item fails the whole request.
        assert!(parsed(&["debug-datapath=true", "x=1"]).is_err());
    }
}
