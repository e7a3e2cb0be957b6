//! The Kubernetes permissions the operator needs, and no more. The Helm chart's ClusterRole
//! must grant exactly these (a test renders the chart and compares), and the cluster
//! simulation checks both ways: every call the reconciler makes is granted, and every grant
//! is used.

/// One RBAC rule: verbs on a resource of an API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

pub const RULES: &[Rule] = &[
    // The controller's watch on FruitPipelines.
    Rule {
        api_group: "fruitpipe.dev",
        resource: "fruitpipelines",
        verbs: &["list", "watch"],
    },
    // Status updates.
    Rule {
        api_group: "fruitpipe.dev",
        resource: "fruitpipelines/status",
        verbs: &["patch"],
    },
    // The watch on owned Jobs, their creation, parallelism/suspend changes, and a get to
    // tell who owns a Job whose name is taken (409 on create). Deletion is left to owner
    // references, so no delete.
    Rule {
        api_group: "batch",
        resource: "jobs",
        verbs: &["create", "get", "list", "patch", "watch"],
    },
    // Termination messages of the Jobs' pods.
    Rule {
        api_group: "",
        resource: "pods",
        verbs: &["list"],
    },
    // Events on phase changes (patch: a repeated event updates its series).
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// Whether `verb` on `resource` of `api_group` is granted.
pub fn allows(api_group: &str, resource: &str, verb: &str) -> bool {
    RULES.iter().any(|rule| {
        rule.api_group == api_group && rule.resource == resource && rule.verbs.contains(&verb)
    })
}

/// The RBAC verb, API group and resource of an API request such as
/// `PATCH /apis/batch/v1/namespaces/fruit/jobs/x`.
pub fn request_permission(method: &str, path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("?", &parts[..0]),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => (String::from("?"), false),
    };
    let verb = match (method, named) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "?",
    };
    (verb.into(), group.into(), resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_rbac_verbs() {
        let permission = |method, path| request_permission(method, path);
        assert_eq!(
            permission("GET", "/api/v1/namespaces/a/pods"),
            ("list".into(), "".into(), "pods".into())
        );
        assert_eq!(
            permission(
                "PATCH",
                "/apis/fruitpipe.dev/v1alpha1/namespaces/a/fruitpipelines/x/status"
            ),
            (
                "patch".into(),
                "fruitpipe.dev".into(),
                "fruitpipelines/status".into()
            )
        );
        assert_eq!(
            permission("POST", "/apis/batch/v1/namespaces/a/jobs"),
            ("create".into(), "batch".into(), "jobs".into())
        );
        assert!(allows("batch", "jobs", "patch"));
        assert!(!allows("batch", "jobs", "delete"));
        assert!(
            !allows("", "secrets", "get"),
            "the operator must never read Secrets"
        );
    }
}
