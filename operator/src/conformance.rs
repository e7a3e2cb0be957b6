//! What the real Kubernetes API server (1.33, default feature gates) refuses, for the
//! objects this operator writes: Jobs (create and update), events.k8s.io/v1 Events and the
//! `metav1.Condition`s of the FruitPipeline status.
//!
//! The operator's tests run against doubles of the API server (a mocked API and an
//! in-memory server). A double that accepts an object the real server refuses hides a bug,
//! so the doubles pass every object through these checks. Each rule is a port of an
//! upstream Go function, named in a comment and in [`Violation::rule`]; constants and
//! character classes are copied from the upstream sources, and the regexes are written out
//! as small character checks.
//!
//! Scope: the fields the operator sets (see `jobs::render`), plus the cheap neighbours of
//! those rules. The API server defaults an object before validating it; where a default
//! changes the outcome (`SetDefaults_Job`, a pod's `restartPolicy`, image pull and
//! termination message policies, a port's protocol) the checks behave as on the defaulted
//! object. Fields the server fills in on create (`metadata.namespace` from the request
//! path, the Job selector and its pod labels, the uid) are accepted when absent.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::batch::v1::{Job, JobSpec, PodFailurePolicy};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, EnvFromSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference,
};
use serde_json::Value;

/// The upstream functions the rules come from; [`Violation::rule`] is one of these.
pub mod rules {
    pub const IS_DNS1123_LABEL: &str = "k8s.io/apimachinery/pkg/util/validation.IsDNS1123Label";
    pub const IS_DNS1123_SUBDOMAIN: &str =
        "k8s.io/apimachinery/pkg/util/validation.IsDNS1123Subdomain";
    pub const IS_QUALIFIED_NAME: &str = "k8s.io/apimachinery/pkg/util/validation.IsQualifiedName";
    pub const IS_VALID_LABEL_VALUE: &str =
        "k8s.io/apimachinery/pkg/util/validation.IsValidLabelValue";
    pub const IS_CONFIG_MAP_KEY: &str = "k8s.io/apimachinery/pkg/util/validation.IsConfigMapKey";
    pub const IS_RELAXED_ENV_VAR_NAME: &str =
        "k8s.io/apimachinery/pkg/util/validation.IsRelaxedEnvVarName";
    pub const IS_VALID_USER_ID: &str = "k8s.io/apimachinery/pkg/util/validation.IsValidUserID";
    pub const IS_VALID_GROUP_ID: &str = "k8s.io/apimachinery/pkg/util/validation.IsValidGroupID";
    pub const IS_DOMAIN_PREFIXED_PATH: &str =
        "k8s.io/apimachinery/pkg/util/validation.IsDomainPrefixedPath";
    pub const PARSE_QUANTITY: &str = "k8s.io/apimachinery/pkg/api/resource.ParseQuantity";

    pub const VALIDATE_OBJECT_META: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateObjectMetaAccessor";
    pub const NAME_IS_DNS_SUBDOMAIN: &str =
        "k8s.io/apimachinery/pkg/api/validation.NameIsDNSSubdomain";
    pub const VALIDATE_NAMESPACE_NAME: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateNamespaceName";
    pub const VALIDATE_NONNEGATIVE_FIELD: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateNonnegativeField";
    pub const VALIDATE_LABELS: &str =
        "k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateLabels";
    pub const VALIDATE_ANNOTATIONS: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateAnnotations";
    pub const VALIDATE_OWNER_REFERENCE: &str =
        "k8s.io/apimachinery/pkg/api/validation.validateOwnerReference";
    pub const VALIDATE_OWNER_REFERENCES: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateOwnerReferences";
    pub const VALIDATE_FINALIZERS: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateFinalizers";
    pub const VALIDATE_KUBE_FINALIZER_NAME: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateKubeFinalizerName";
    pub const VALIDATE_LABEL_SELECTOR: &str =
        "k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateLabelSelector";
    pub const VALIDATE_IMMUTABLE_FIELD: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateImmutableField";
    pub const VALIDATE_OBJECT_META_UPDATE: &str =
        "k8s.io/apimachinery/pkg/api/validation.ValidateObjectMetaAccessorUpdate";

    pub const VALIDATE_JOB: &str = "k8s.io/kubernetes/pkg/apis/batch/validation.ValidateJob";
    pub const VALIDATE_JOB_SPEC: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.ValidateJobSpec";
    pub const VALIDATE_JOB_SPEC_INNER: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validateJobSpec";
    pub const VALIDATE_GENERATED_SELECTOR: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validateGeneratedSelector";
    pub const GENERATE_SELECTOR: &str = "k8s.io/kubernetes/pkg/registry/batch/job.generateSelector";
    pub const VALIDATE_POD_FAILURE_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodFailurePolicy";
    pub const VALIDATE_POD_FAILURE_POLICY_RULE: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodFailurePolicyRule";
    pub const VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodFailurePolicyRuleOnExitCodes";
    pub const VALIDATE_POD_FAILURE_POLICY_RULE_ON_POD_CONDITIONS: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodFailurePolicyRuleOnPodConditions";
    pub const VALIDATE_POD_REPLACEMENT_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodReplacementPolicy";
    pub const VALIDATE_SUCCESS_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validateSuccessPolicy";
    pub const VALIDATE_JOB_SPEC_UPDATE: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.ValidateJobSpecUpdate";
    pub const VALIDATE_COMPLETIONS: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validateCompletions";
    pub const VALIDATE_POD_TEMPLATE_UPDATE: &str =
        "k8s.io/kubernetes/pkg/apis/batch/validation.validatePodTemplateUpdate";

    pub const VALIDATE_POD_TEMPLATE_SPEC: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidatePodTemplateSpec";
    pub const VALIDATE_POD_SPEC: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidatePodSpec";
    pub const VALIDATE_RESTART_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateRestartPolicy";
    pub const VALIDATE_DNS_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateDNSPolicy";
    pub const VALIDATE_CONTAINERS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateContainers";
    pub const VALIDATE_INIT_CONTAINERS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateInitContainers";
    pub const VALIDATE_CONTAINER_COMMON: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateContainerCommon";
    pub const VALIDATE_CONTAINER_PORTS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateContainerPorts";
    pub const VALIDATE_PULL_POLICY: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validatePullPolicy";
    pub const VALIDATE_ENV: &str = "k8s.io/kubernetes/pkg/apis/core/validation.ValidateEnv";
    pub const VALIDATE_ENV_VAR_VALUE_FROM: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateEnvVarValueFrom";
    pub const VALIDATE_SECRET_KEY_SELECTOR: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateSecretKeySelector";
    pub const VALIDATE_CONFIG_MAP_KEY_SELECTOR: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateConfigMapKeySelector";
    pub const VALIDATE_ENV_FROM: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateEnvFrom";
    pub const VALIDATE_VOLUMES: &str = "k8s.io/kubernetes/pkg/apis/core/validation.ValidateVolumes";
    pub const VALIDATE_VOLUME_SOURCE: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateVolumeSource";
    pub const VALIDATE_VOLUME_MOUNTS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateVolumeMounts";
    pub const VALIDATE_RESOURCE_REQUIREMENTS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateResourceRequirements";
    pub const VALIDATE_CONTAINER_RESOURCE_NAME: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateContainerResourceName";
    pub const VALIDATE_RESOURCE_QUANTITY_VALUE: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateResourceQuantityValue";
    pub const VALIDATE_SECURITY_CONTEXT: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateSecurityContext";
    pub const VALIDATE_POD_SPEC_SECURITY_CONTEXT: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validatePodSpecSecurityContext";
    pub const VALIDATE_SECCOMP_PROFILE_FIELD: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateSeccompProfileField";
    pub const VALIDATE_APP_ARMOR_PROFILE_FIELD: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateAppArmorProfileField";
    pub const VALIDATE_TOLERATIONS: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateTolerations";

    pub const VALIDATE_EVENT_CREATE: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.ValidateEventCreate";
    pub const LEGACY_VALIDATE_EVENT: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.legacyValidateEvent";
    pub const VALIDATE_V1_EVENT_SERIES: &str =
        "k8s.io/kubernetes/pkg/apis/core/validation.validateV1EventSeries";

    pub const VALIDATE_CONDITIONS: &str =
        "k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateConditions";
    pub const VALIDATE_CONDITION: &str =
        "k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateCondition";
}

/// One rule the API server would refuse the object for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field path as the API server prints it, e.g. `spec.template.spec.containers[0].name`.
    pub field: String,
    pub message: String,
    /// The upstream Go function the rule comes from (one of [`rules`]).
    pub rule: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.rule)
    }
}

// ----------------------------------------------------------------------------------------
// Building blocks: k8s.io/apimachinery/pkg/util/validation
// ----------------------------------------------------------------------------------------

// k8s.io/apimachinery/pkg/util/validation: DNS1123LabelMaxLength, DNS1123SubdomainMaxLength,
// qualifiedNameMaxLength, LabelValueMaxLength.
const DNS1123_LABEL_MAX_LENGTH: usize = 63;
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const LABEL_VALUE_MAX_LENGTH: usize = 63;

fn max_len_error(length: usize) -> String {
    // k8s.io/apimachinery/pkg/util/validation.MaxLenError
    format!("must be no more than {length} characters")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` (dns1123LabelFmt).
fn matches_dns1123_label(s: &str) -> bool {
    let first = s.chars().next();
    let last = s.chars().next_back();
    match (first, last) {
        (Some(first), Some(last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        }
        _ => false,
    }
}

/// `^dns1123LabelFmt(\.dns1123LabelFmt)*$` (dns1123SubdomainFmt).
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$` (qualifiedNameFmt).
fn matches_qualified_name(s: &str) -> bool {
    let first = s.chars().next();
    let last = s.chars().next_back();
    match (first, last) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        }
        _ => false,
    }
}

/// What `IsDNS1123Label` (k8s.io/apimachinery/pkg/util/validation) says is wrong with a
/// name; empty when it is a valid RFC 1123 label.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsDNS1123Label
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
                 or '-', and must start and end with an alphanumeric character (regex used for \
                 validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    .into(),
            );
        }
    }
    errs
}

/// `IsDNS1123Subdomain` (k8s.io/apimachinery/pkg/util/validation).
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsDNS1123Subdomain
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    errs
}

/// `IsQualifiedName` (k8s.io/apimachinery/pkg/util/validation): a name of at most 63
/// characters with an optional DNS subdomain prefix and `/` (label keys, condition types).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsQualifiedName
    const MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start \
                       and end with an alphanumeric character (regex used for validation is \
                       '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|msg| format!("prefix part {msg}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {MSG} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name(name) {
        errs.push(format!("name part {MSG}"));
    }
    errs
}

/// `IsValidLabelValue` (k8s.io/apimachinery/pkg/util/validation): empty, or at most 63
/// characters of `[-A-Za-z0-9_.]` starting and ending with an alphanumeric character.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsValidLabelValue
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .into(),
        );
    }
    errs
}

fn has_ch_dir_prefix(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.hasChDirPrefix
    if value == "." {
        vec!["must not be '.'".into()]
    } else if value == ".." {
        vec!["must not be '..'".into()]
    } else if value.starts_with("..") {
        vec!["must not start with '..'".into()]
    } else {
        Vec::new()
    }
}

/// `IsEnvVarName` (k8s.io/apimachinery/pkg/util/validation), the strict rule:
/// `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`, `..` or starting with `..`.
///
/// With the 1.33 default feature gates (RelaxedEnvironmentVariableValidation, beta and on
/// by default since 1.32) the API server applies [`is_relaxed_env_var_name`] to container
/// env instead; [`check_job`] does the same. This strict form is what a cluster with the
/// gate turned off enforces, and what every shell accepts.
pub fn is_env_var_name(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsEnvVarName
    let mut errs = Vec::new();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let valid = match value.chars().next() {
        Some(first) => !first.is_ascii_digit() && value.chars().all(allowed),
        None => false,
    };
    if !valid {
        errs.push(
            "a valid environment variable name must consist of alphabetic characters, digits, \
             '_', '-', or '.', and must not start with a digit (regex used for validation is \
             '[-._a-zA-Z][-._a-zA-Z0-9]*')"
                .into(),
        );
    }
    errs.extend(has_ch_dir_prefix(value));
    errs
}

/// `IsRelaxedEnvVarName` (k8s.io/apimachinery/pkg/util/validation): non-empty, printable
/// ASCII other than `=`. What 1.33 enforces for container env names by default.
pub fn is_relaxed_env_var_name(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsRelaxedEnvVarName: r > unicode.MaxASCII ||
    // !unicode.IsPrint(r) || r == '='; for ASCII, IsPrint is ' '..='~'.
    let mut errs = Vec::new();
    if value.is_empty() {
        errs.push("environment variable name must be non-empty".into());
    }
    if value.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(
            "a valid environment variable name must consist only of printable ASCII characters \
             other than '='"
                .into(),
        );
    }
    errs
}

/// `IsConfigMapKey` (k8s.io/apimachinery/pkg/util/validation): a ConfigMap or Secret key.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsConfigMapKey
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if value.is_empty() || !value.chars().all(allowed) {
        errs.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (regex \
             used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    errs.extend(has_ch_dir_prefix(value));
    errs
}

fn is_valid_port_name(port: &str) -> Vec<String> {
    // k8s.io/apimachinery/pkg/util/validation.IsValidPortName
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty()
        || !port
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

// k8s.io/apimachinery/pkg/util/validation: minUserID/maxUserID, minGroupID/maxGroupID are
// 0 and math.MaxInt32 in 1.33 (widened to the uint32 range only after 1.33).
const MAX_ID: i64 = i32::MAX as i64;

// ----------------------------------------------------------------------------------------
// Quantities: k8s.io/apimachinery/pkg/api/resource
// ----------------------------------------------------------------------------------------

/// A parsed resource quantity, exactly as `resource.ParseQuantity` would hold it: the
/// value rounded up to nano units (10^-9), BinarySI values capped at 2^63-1.
///
/// The magnitude is `digits × 10^zeros` nano units, so a comparison never overflows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Decimal digits, most significant first, without leading zeros; empty for zero.
    digits: Vec<u8>,
    zeros: u64,
}

impl Quantity {
    fn zero() -> Self {
        Quantity {
            negative: false,
            digits: Vec::new(),
            zeros: 0,
        }
    }

    fn from_parts(negative: bool, mut digits: Vec<u8>, zeros: u64) -> Self {
        let first_nonzero = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
        digits.drain(..first_nonzero);
        if digits.is_empty() {
            return Quantity::zero();
        }
        Quantity {
            negative,
            digits,
            zeros,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Below zero (`Quantity.Cmp(Quantity{}) < 0`); `-0` is zero.
    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    fn cmp_magnitude(&self, other: &Self) -> Ordering {
        let len_a = self.digits.len() as u128 + u128::from(self.zeros);
        let len_b = other.digits.len() as u128 + u128::from(other.zeros);
        if self.is_zero() || other.is_zero() {
            return self.is_zero().cmp(&other.is_zero()).reverse();
        }
        match len_a.cmp(&len_b) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        let width = self.digits.len().max(other.digits.len());
        for i in 0..width {
            let a = self.digits.get(i).copied().unwrap_or(0);
            let b = other.digits.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }

    /// `MilliValue() % 1000 == 0`: the value is a whole number (`ValidateResourceQuantityValue`
    /// for integer resources). MilliValue is `ceil(q * 1000)`.
    fn is_whole(&self) -> bool {
        if self.is_zero() {
            return true;
        }
        // milli = ceil(nano / 10^6); whole when milli ends in three zeros.
        let (digits, zeros) = ceil_div_pow10(&self.digits, self.zeros, 6);
        if zeros >= 3 {
            return true;
        }
        let need = 3 - zeros as usize;
        digits.len() >= need && digits[digits.len() - need..].iter().all(|&d| d == 0)
    }

    /// A canonical text (sign, digits, exponent) for semantic comparisons.
    fn canonical(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let digits: String = self.digits.iter().map(|d| char::from(b'0' + d)).collect();
        format!(
            "{}{}e{}n",
            if self.negative { "-" } else { "" },
            digits,
            self.zeros
        )
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    /// `Quantity.Cmp`.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.is_negative(), other.is_negative()) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => self.cmp_magnitude(other).reverse(),
        }
    }
}

/// `ceil(digits × 10^zeros / 10^power)` as (digits, zeros).
fn ceil_div_pow10(digits: &[u8], zeros: u64, power: u64) -> (Vec<u8>, u64) {
    if zeros >= power {
        return (digits.to_vec(), zeros - power);
    }
    let drop = (power - zeros) as usize;
    if drop >= digits.len() {
        let nonzero = digits.iter().any(|&d| d != 0);
        return (if nonzero { vec![1] } else { Vec::new() }, 0);
    }
    let (kept, dropped) = digits.split_at(digits.len() - drop);
    let mut kept = kept.to_vec();
    if dropped.iter().any(|&d| d != 0) {
        add_one(&mut kept);
    }
    (kept, 0)
}

fn add_one(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, 1);
}

fn mul_small(digits: &mut Vec<u8>, factor: u32) {
    let mut carry: u64 = 0;
    for d in digits.iter_mut().rev() {
        let v = u64::from(*d) * u64::from(factor) + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum QuantityFormat {
    DecimalExponent,
    BinarySI,
    DecimalSI,
}

const ERR_FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const ERR_NUMERIC: &str = "unable to parse numeric part of quantity";
const ERR_SUFFIX: &str = "unable to parse quantity's suffix";

struct QuantityParts<'a> {
    positive: bool,
    value: &'a str,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// k8s.io/apimachinery/pkg/api/resource.parseQuantityString, byte for byte.
fn parse_quantity_string(s: &str) -> Result<QuantityParts<'_>, &'static str> {
    let b = s.as_bytes();
    let end = b.len();
    let mut positive = true;
    let mut pos = 0;
    if pos < end {
        match b[0] {
            b'-' => {
                positive = false;
                pos += 1;
            }
            b'+' => pos += 1,
            _ => {}
        }
    }
    // strip leading zeros
    loop {
        if pos >= end {
            return Ok(QuantityParts {
                positive,
                value: "0",
                num: "0",
                denom: "",
                suffix: "",
            });
        }
        if b[pos] == b'0' {
            pos += 1;
        } else {
            break;
        }
    }
    // the numerator
    let num_start = pos;
    let mut i = pos;
    while i < end && b[i].is_ascii_digit() {
        i += 1;
    }
    if i >= end {
        return Ok(QuantityParts {
            positive,
            value: s,
            num: &s[num_start..end],
            denom: "",
            suffix: "",
        });
    }
    let mut num = &s[num_start..i];
    pos = i;
    if num.is_empty() {
        num = "0";
    }
    // a denominator
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        let mut i = pos;
        while i < end && b[i].is_ascii_digit() {
            i += 1;
        }
        if i >= end {
            return Ok(QuantityParts {
                positive,
                value: s,
                num,
                denom: &s[denom_start..end],
                suffix: "",
            });
        }
        denom = &s[denom_start..i];
        pos = i;
    }
    let value = &s[..pos];
    // the suffix: letters of eEinumkKMGTP, an optional sign, digits
    let suffix_start = pos;
    let mut i = pos;
    while i < end && b"eEinumkKMGTP".contains(&b[i]) {
        i += 1;
    }
    if i >= end {
        return Ok(QuantityParts {
            positive,
            value,
            num,
            denom,
            suffix: &s[suffix_start..end],
        });
    }
    pos = i;
    if matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    let mut i = pos;
    while i < end && b[i].is_ascii_digit() {
        i += 1;
    }
    if i >= end {
        return Ok(QuantityParts {
            positive,
            value,
            num,
            denom,
            suffix: &s[suffix_start..end],
        });
    }
    Err(ERR_FORMAT_WRONG)
}

/// k8s.io/apimachinery/pkg/api/resource.(suffixHandler).interpret: (base, exponent, format).
fn interpret_suffix(suffix: &str) -> Option<(u32, i32, QuantityFormat)> {
    use QuantityFormat::*;
    let decimal = |e| Some((10, e, DecimalSI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Some((2, 10, BinarySI)),
        "Mi" => Some((2, 20, BinarySI)),
        "Gi" => Some((2, 30, BinarySI)),
        "Ti" => Some((2, 40, BinarySI)),
        "Pi" => Some((2, 50, BinarySI)),
        "Ei" => Some((2, 60, BinarySI)),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            if rest.is_empty() {
                return None;
            }
            // strconv.ParseInt(s[1:], 10, 64), then int32(parsed): Go keeps the low 32 bits.
            let parsed = parse_go_int64(rest)?;
            Some((10, parsed as i32, DecimalExponent))
        }
    }
}

/// `strconv.ParseInt(s, 10, 64)`: an optional sign, then decimal digits.
fn parse_go_int64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Parses a quantity as the API server does when it decodes `"1Gi"`, `"500m"`, `"1e3"`
/// (`Quantity.UnmarshalJSON`: surrounding whitespace trimmed, then
/// `resource.ParseQuantity`). The error is upstream's message.
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    // k8s.io/apimachinery/pkg/api/resource.(*Quantity).UnmarshalJSON → ParseQuantity
    let s = s.trim_matches(|c: char| c.is_whitespace());
    if s.is_empty() {
        return Err(ERR_FORMAT_WRONG.into());
    }
    if s == "0" {
        return Ok(Quantity::zero());
    }
    let parts = parse_quantity_string(s)?;
    let (base, exponent, format) = interpret_suffix(parts.suffix).ok_or(ERR_SUFFIX)?;

    // resource.maxInt64Factors = 18; resource.Nano = -9.
    const MAX_INT64_FACTORS: i64 = 18;
    const NANO: i64 = -9;
    let digits_len = (parts.num.len() + parts.denom.len()) as i64;
    let mut scale: i64;
    let mut mantissa: i64 = 1;
    let precision: i64;
    match format {
        QuantityFormat::DecimalExponent | QuantityFormat::DecimalSI => {
            scale = i64::from(exponent);
            precision = MAX_INT64_FACTORS - digits_len;
        }
        QuantityFormat::BinarySI => {
            scale = 0;
            if exponent >= 0 && parts.denom.is_empty() {
                mantissa <<= exponent;
                // 15 - len(num) - int32(float32(exponent)*3/10) - 1
                let approx = (exponent as f32 * 3.0 / 10.0) as i64;
                precision = 15 - parts.num.len() as i64 - approx - 1;
            } else {
                precision = -1;
            }
        }
    }
    if precision >= 0 {
        scale -= parts.denom.len() as i64;
        if scale >= NANO {
            let shifted = format!("{}{}", parts.num, parts.denom);
            let value: i64 = shifted.parse().map_err(|_| ERR_NUMERIC)?;
            if let Some(result) = value.checked_mul(mantissa) {
                let digits = decimal_digits(&result.unsigned_abs().to_string());
                return Ok(Quantity::from_parts(
                    !parts.positive,
                    digits,
                    (scale - NANO) as u64,
                ));
            }
        }
    }

    // The inf.Dec path: inf.Dec.SetString needs at least one digit.
    if !parts.value.bytes().any(|b| b.is_ascii_digit()) {
        return Err(ERR_NUMERIC.into());
    }
    let mut digits = decimal_digits(&format!("{}{}", parts.num, parts.denom));
    let mut decimal_exponent = -(parts.denom.len() as i64);
    if base == 10 {
        decimal_exponent += i64::from(exponent);
    } else {
        for _ in 0..exponent {
            mul_small(&mut digits, 2);
        }
    }
    // Round up to nano units: value × 10^(e + 9), ceil.
    let shift = decimal_exponent - NANO;
    let (mut digits, mut zeros) = if shift >= 0 {
        (digits, shift as u64)
    } else {
        ceil_div_pow10(&digits, 0, shift.unsigned_abs())
    };
    if format == QuantityFormat::BinarySI {
        // resource.maxAllowed: int64 max, at scale 0.
        let cap = Quantity::from_parts(false, decimal_digits(&i64::MAX.to_string()), 9);
        let value = Quantity::from_parts(false, digits.clone(), zeros);
        if value.cmp_magnitude(&cap) == Ordering::Greater {
            digits = cap.digits;
            zeros = cap.zeros;
        }
    }
    Ok(Quantity::from_parts(!parts.positive, digits, zeros))
}

fn decimal_digits(s: &str) -> Vec<u8> {
    s.bytes().map(|b| b - b'0').collect()
}

// ----------------------------------------------------------------------------------------
// The checker
// ----------------------------------------------------------------------------------------

fn child(path: &str, name: &str) -> String {
    format!("{path}.{name}")
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

#[derive(Default)]
struct Checker {
    out: Vec<Violation>,
}

impl Checker {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>, rule: &'static str) {
        self.out.push(Violation {
            field: field.into(),
            message: message.into(),
            rule,
        });
    }

    /// A field that must be set and at most `limit` bytes long (Go's `len`).
    fn required_within(&mut self, field: &str, value: &str, limit: usize, rule: &'static str) {
        if value.is_empty() {
            self.push(field, "Required value", rule);
        }
        if value.len() > limit {
            self.push(
                field,
                format!("Invalid value: \"\": can have at most {limit} characters"),
                rule,
            );
        }
    }

    fn nonnegative(&mut self, field: &str, value: Option<i64>) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateNonnegativeField
        if let Some(value) = value
            && value < 0
        {
            self.push(
                field,
                format!("Invalid value: {value}: must be greater than or equal to 0"),
                rules::VALIDATE_NONNEGATIVE_FIELD,
            );
        }
    }

    fn labels(&mut self, field: &str, labels: Option<&BTreeMap<String, String>>) {
        // k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateLabels: keys are
        // qualified names (ValidateLabelName), values valid label values.
        for (k, v) in labels.into_iter().flatten() {
            for msg in is_qualified_name(k) {
                self.push(
                    field,
                    format!("Invalid value: {k:?}: {msg}"),
                    rules::VALIDATE_LABELS,
                );
            }
            for msg in is_valid_label_value(v) {
                self.push(
                    field,
                    format!("Invalid value: {v:?}: {msg}"),
                    rules::VALIDATE_LABELS,
                );
            }
        }
    }

    fn annotations(&mut self, field: &str, annotations: Option<&BTreeMap<String, String>>) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateAnnotations: keys are qualified
        // names once lower-cased; keys and values together at most TotalAnnotationSizeLimitB.
        const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * (1 << 10);
        let Some(annotations) = annotations else {
            return;
        };
        for k in annotations.keys() {
            for msg in is_qualified_name(&k.to_lowercase()) {
                self.push(
                    field,
                    format!("Invalid value: {k:?}: {msg}"),
                    rules::VALIDATE_ANNOTATIONS,
                );
            }
        }
        let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
            self.push(
                field,
                format!(
                    "Too long: annotations size {total} is larger than limit \
                     {TOTAL_ANNOTATION_SIZE_LIMIT_B} bytes"
                ),
                rules::VALIDATE_ANNOTATIONS,
            );
        }
    }

    fn owner_references(&mut self, field: &str, refs: Option<&Vec<OwnerReference>>) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateOwnerReferences
        let mut first_controller: Option<String> = None;
        for reference in refs.into_iter().flatten() {
            // validateOwnerReference: schema.FromAPIVersionAndKind; a version is required
            // (an apiVersion with more than one '/' does not parse, leaving it empty).
            let version = match reference
                .api_version
                .split('/')
                .collect::<Vec<_>>()
                .as_slice()
            {
                [version] => *version,
                [_group, version] => *version,
                _ => "",
            };
            if version.is_empty() {
                self.push(
                    child(field, "apiVersion"),
                    format!(
                        "Invalid value: {:?}: version must not be empty",
                        reference.api_version
                    ),
                    rules::VALIDATE_OWNER_REFERENCE,
                );
            }
            for (name, value) in [
                ("kind", &reference.kind),
                ("name", &reference.name),
                ("uid", &reference.uid),
            ] {
                if value.is_empty() {
                    self.push(
                        child(field, name),
                        "Invalid value: \"\": must not be empty",
                        rules::VALIDATE_OWNER_REFERENCE,
                    );
                }
            }
            // BannedOwners: core/v1 Event.
            if reference.kind == "Event" && reference.api_version == "v1" {
                self.push(
                    field,
                    "/v1, Kind=Event is disallowed from being an owner",
                    rules::VALIDATE_OWNER_REFERENCE,
                );
            }
            if reference.controller == Some(true) {
                let current = format!("{}/{}", reference.kind, reference.name);
                match &first_controller {
                    Some(first) => self.push(
                        field,
                        format!(
                            "Only one reference can have Controller set to true. Found \"true\" \
                             in references for {first} and {current}"
                        ),
                        rules::VALIDATE_OWNER_REFERENCES,
                    ),
                    None => first_controller = Some(current),
                }
            }
        }
    }

    fn finalizers(&mut self, field: &str, finalizers: Option<&Vec<String>>) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateFinalizers, and
        // k8s.io/kubernetes/pkg/apis/core/validation.validateKubeFinalizerName (an
        // unprefixed name must be a standard one).
        let finalizers = finalizers.map(Vec::as_slice).unwrap_or_default();
        for (i, finalizer) in finalizers.iter().enumerate() {
            for msg in is_qualified_name(finalizer) {
                self.push(
                    field,
                    format!("Invalid value: {finalizer:?}: {msg}"),
                    rules::VALIDATE_FINALIZERS,
                );
            }
            if !finalizer.contains('/')
                && !["kubernetes", "orphan", "foregroundDeletion"].contains(&finalizer.as_str())
            {
                self.push(
                    index(field, i),
                    format!(
                        "Invalid value: {finalizer:?}: name is neither a standard finalizer name \
                         nor is it fully qualified"
                    ),
                    rules::VALIDATE_KUBE_FINALIZER_NAME,
                );
            }
        }
        if finalizers.iter().any(|f| f == "orphan")
            && finalizers.iter().any(|f| f == "foregroundDeletion")
        {
            self.push(
                field,
                "finalizer orphan and foregroundDeletion cannot be both set",
                rules::VALIDATE_FINALIZERS,
            );
        }
    }

    /// `ValidateObjectMeta` for a namespaced object whose name must be a DNS subdomain
    /// (`ValidateReplicationControllerName` for Jobs, `NameIsDNSSubdomain` for Events).
    fn object_meta(&mut self, meta: &ObjectMeta, path: &str) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateObjectMetaAccessor
        let name = meta.name.as_deref().unwrap_or_default();
        let generate_name = meta.generate_name.as_deref().unwrap_or_default();
        if !generate_name.is_empty() {
            // NameIsDNSSubdomain(generateName, prefix=true): maskTrailingDash.
            // maskTrailingDash: name[:len(name)-2] + "a" when it ends in '-'.
            let masked = match generate_name.get(..generate_name.len().saturating_sub(2)) {
                Some(head) if generate_name.ends_with('-') && generate_name.len() >= 2 => {
                    format!("{head}a")
                }
                _ => generate_name.to_string(),
            };
            for msg in is_dns1123_subdomain(&masked) {
                self.push(
                    child(path, "generateName"),
                    format!("Invalid value: {generate_name:?}: {msg}"),
                    rules::NAME_IS_DNS_SUBDOMAIN,
                );
            }
        }
        if name.is_empty() {
            if generate_name.is_empty() {
                self.push(
                    child(path, "name"),
                    "Required value: name or generateName is required",
                    rules::VALIDATE_OBJECT_META,
                );
            }
        } else {
            for msg in is_dns1123_subdomain(name) {
                self.push(
                    child(path, "name"),
                    format!("Invalid value: {name:?}: {msg}"),
                    rules::NAME_IS_DNS_SUBDOMAIN,
                );
            }
        }
        // The namespace is required, but a create through a namespaced URL fills an empty
        // one in (rest.BeforeCreate), so only a namespace that is given is checked.
        if let Some(namespace) = meta.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            for msg in is_dns1123_label(namespace) {
                self.push(
                    child(path, "namespace"),
                    format!("Invalid value: {namespace:?}: {msg}"),
                    rules::VALIDATE_NAMESPACE_NAME,
                );
            }
        }
        self.nonnegative(&child(path, "generation"), meta.generation);
        self.labels(&child(path, "labels"), meta.labels.as_ref());
        self.annotations(&child(path, "annotations"), meta.annotations.as_ref());
        self.owner_references(
            &child(path, "ownerReferences"),
            meta.owner_references.as_ref(),
        );
        self.finalizers(&child(path, "finalizers"), meta.finalizers.as_ref());
    }

    fn label_selector(&mut self, selector: &LabelSelector, path: &str) {
        // k8s.io/apimachinery/pkg/apis/meta/v1/validation.ValidateLabelSelector
        self.labels(&child(path, "matchLabels"), selector.match_labels.as_ref());
        for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
            let at = index(&child(path, "matchExpressions"), i);
            let values = requirement.values.as_deref().unwrap_or_default();
            match requirement.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        self.push(
                            child(&at, "values"),
                            "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                            rules::VALIDATE_LABEL_SELECTOR,
                        );
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        self.push(
                            child(&at, "values"),
                            "Forbidden: may not be specified when `operator` is 'Exists' or \
                             'DoesNotExist'",
                            rules::VALIDATE_LABEL_SELECTOR,
                        );
                    }
                }
                other => self.push(
                    child(&at, "operator"),
                    format!("Invalid value: {other:?}: not a valid selector operator"),
                    rules::VALIDATE_LABEL_SELECTOR,
                ),
            }
            for msg in is_qualified_name(&requirement.key) {
                self.push(
                    child(&at, "key"),
                    format!("Invalid value: {:?}: {msg}", requirement.key),
                    rules::VALIDATE_LABEL_SELECTOR,
                );
            }
            for (j, value) in values.iter().enumerate() {
                for msg in is_valid_label_value(value) {
                    self.push(
                        index(&child(&at, "values"), j),
                        format!("Invalid value: {value:?}: {msg}"),
                        rules::VALIDATE_LABEL_SELECTOR,
                    );
                }
            }
        }
    }
}

/// `labels.Selector.Matches` for a `metav1.LabelSelector` (LabelSelectorAsSelector).
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

// ----------------------------------------------------------------------------------------
// Jobs
// ----------------------------------------------------------------------------------------

// k8s.io/kubernetes/pkg/apis/batch/validation constants.
const MAX_PARALLELISM_FOR_INDEXED_JOB: i32 = 100_000;
const MAX_FAILED_INDEXES_FOR_INDEXED_JOB: i32 = 100_000;
const COMPLETIONS_SOFT_LIMIT: i32 = 100_000;
const PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_POD_FAILURE_POLICY_RULES: usize = 20;
const MAX_POD_FAILURE_POLICY_ON_EXIT_CODES_VALUES: usize = 255;
const MAX_POD_FAILURE_POLICY_ON_POD_CONDITIONS_PATTERNS: usize = 20;
const MAX_MANAGED_BY_LENGTH: usize = 63;
const MAX_JOB_SUCCESS_POLICY_SUCCEEDED_INDEXES_LIMIT: usize = 64 * 1024;
const MAX_SUCCESS_POLICY_RULE: usize = 20;

const INDEXED: &str = "Indexed";
const NON_INDEXED: &str = "NonIndexed";

// k8s.io/kubernetes/pkg/apis/batch: JobNameLabel, LegacyJobNameLabel, ControllerUidLabel,
// LegacyControllerUidLabel.
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
const CONTROLLER_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// The spec after `SetDefaults_Job` (k8s.io/kubernetes/pkg/apis/batch/v1/defaults.go), which
/// the API server applies while decoding, before validation and before comparing an update.
fn defaulted_job_spec(spec: Option<&JobSpec>) -> JobSpec {
    // k8s.io/kubernetes/pkg/apis/batch/v1.SetDefaults_Job and
    // SetDefaults_PodFailurePolicyOnPodConditionsPattern.
    let mut spec = spec.cloned().unwrap_or_default();
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
        spec.parallelism = Some(1);
    }
    if spec.parallelism.is_none() {
        spec.parallelism = Some(1);
    }
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    if spec.completion_mode.is_none() {
        spec.completion_mode = Some(NON_INDEXED.into());
    }
    if spec.suspend.is_none() {
        spec.suspend = Some(false);
    }
    // JobPodReplacementPolicy is on by default in 1.33 (beta since 1.29).
    if spec.pod_replacement_policy.is_none() {
        spec.pod_replacement_policy = Some(
            if spec.pod_failure_policy.is_some() {
                "Failed"
            } else {
                "TerminatingOrFailed"
            }
            .into(),
        );
    }
    if spec.manual_selector.is_none() {
        spec.manual_selector = Some(false);
    }
    if let Some(policy) = spec.pod_failure_policy.as_mut() {
        for pattern in policy
            .rules
            .iter_mut()
            .flat_map(|rule| rule.on_pod_conditions.iter_mut().flatten())
        {
            if pattern.status.is_empty() {
                pattern.status = "True".into();
            }
        }
    }
    spec
}

/// The name the Job will have: `metadata.name`, or for `generateName` the prefix plus the
/// five characters the server appends (`names.SimpleNameGenerator`).
fn effective_job_name(meta: &ObjectMeta) -> String {
    match meta.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => format!("{}xxxxx", meta.generate_name.as_deref().unwrap_or_default()),
    }
}

/// What `ValidateJob` (k8s.io/kubernetes/pkg/apis/batch/validation) refuses on create, for a
/// Job as the operator sends it: after `SetDefaults_Job`, with the selector and pod labels
/// the server generates (`generateSelector`), and the uid the server assigns.
pub fn check_job(job: &Job) -> Vec<Violation> {
    let mut c = Checker::default();
    let spec = defaulted_job_spec(job.spec.as_ref());
    let name = effective_job_name(&job.metadata);
    let uid = job.metadata.uid.as_deref().filter(|uid| !uid.is_empty());

    // ValidateJob: ValidateObjectMeta with ValidateReplicationControllerName
    // (NameIsDNSSubdomain).
    c.object_meta(&job.metadata, "metadata");
    c.generated_selector(&spec, &name, uid);
    c.job_spec(&spec, "spec");
    c.job_selector(&spec, &name, uid, "spec");

    // ValidateJob: an Indexed Job's pods get the hostname `<name>-<index>`, which must be a
    // DNS-1123 label for the largest index, completions-1.
    if spec.completion_mode.as_deref() == Some(INDEXED)
        && let Some(completions) = spec.completions.filter(|&n| n > 0)
    {
        let hostname = format!("{}-{}", name, completions - 1);
        if !is_dns1123_label(&hostname).is_empty() {
            c.push(
                "metadata.name",
                format!(
                    "Invalid value: {name:?}: will not able to create pod with invalid DNS \
                     label: {hostname}"
                ),
                rules::VALIDATE_JOB,
            );
        }
    }
    c.out
}

impl Checker {
    /// The pod labels the server adds (`generateSelector`) and `validateGeneratedSelector`.
    fn generated_selector(&mut self, spec: &JobSpec, name: &str, uid: Option<&str>) {
        if spec.manual_selector == Some(true) {
            return;
        }
        let path = "spec.template.metadata.labels";
        // ValidatePodTemplateSpec reports label errors under spec.template.labels.
        let labels_path = "spec.template.labels";
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default();
        // k8s.io/kubernetes/pkg/registry/batch/job.generateSelector adds job-name labels
        // holding the Job's name to the pod template, which ValidatePodTemplateSpec then
        // validates as label values: a Job name over 63 characters is refused.
        if JOB_NAME_LABELS.iter().any(|l| !labels.contains_key(*l)) {
            for msg in is_valid_label_value(name) {
                self.push(
                    labels_path,
                    format!("Invalid value: {name:?}: {msg}"),
                    rules::GENERATE_SELECTOR,
                );
            }
        }
        // validateGeneratedSelector: labels the template already has must be the ones the
        // server would have generated (ValidateHasLabel).
        for label in JOB_NAME_LABELS {
            if let Some(value) = labels.get(label)
                && value != name
            {
                self.push(
                    key(path, label),
                    format!("Invalid value: {value:?}: must be '{name}'"),
                    rules::VALIDATE_GENERATED_SELECTOR,
                );
            }
        }
        for label in CONTROLLER_UID_LABELS {
            if let Some(value) = labels.get(label) {
                match uid {
                    Some(uid) if value == uid => {}
                    Some(uid) => self.push(
                        key(path, label),
                        format!("Invalid value: {value:?}: must be '{uid}'"),
                        rules::VALIDATE_GENERATED_SELECTOR,
                    ),
                    None => self.push(
                        key(path, label),
                        format!(
                            "Invalid value: {value:?}: must be the Job's uid, which the API \
                             server assigns on create"
                        ),
                        rules::VALIDATE_GENERATED_SELECTOR,
                    ),
                }
            }
        }
        // A selector given without manualSelector must select exactly the generated labels.
        if let Some(selector) = &spec.selector {
            let mut expected = BTreeMap::new();
            for label in JOB_NAME_LABELS {
                expected.insert(label.to_string(), name.to_string());
            }
            if let Some(uid) = uid {
                for label in CONTROLLER_UID_LABELS {
                    expected.insert(label.to_string(), uid.to_string());
                }
            }
            let mentions_uid = selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .chain(selector.match_expressions.iter().flatten().map(|r| &r.key))
                .any(|k| CONTROLLER_UID_LABELS.contains(&k.as_str()));
            if (uid.is_none() && mentions_uid) || !selector_matches(selector, &expected) {
                self.push(
                    "spec.selector",
                    "Invalid value: `selector` not auto-generated",
                    rules::VALIDATE_GENERATED_SELECTOR,
                );
            }
        }
    }

    /// `ValidateJobSpec`: the selector (generated when absent and not manual) and its match
    /// with the template labels.
    fn job_selector(&mut self, spec: &JobSpec, name: &str, uid: Option<&str>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/batch/validation.ValidateJobSpec
        let manual = spec.manual_selector == Some(true);
        let Some(selector) = &spec.selector else {
            if manual {
                self.push(
                    child(path, "selector"),
                    "Required value",
                    rules::VALIDATE_JOB_SPEC,
                );
            }
            return;
        };
        self.label_selector(selector, &child(path, "selector"));
        let mut labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default();
        if !manual {
            for label in JOB_NAME_LABELS {
                labels.entry(label.into()).or_insert_with(|| name.into());
            }
            if let Some(uid) = uid {
                for label in CONTROLLER_UID_LABELS {
                    labels.entry(label.into()).or_insert_with(|| uid.into());
                }
            }
        }
        if manual && !selector_matches(selector, &labels) {
            self.push(
                child(path, "template.metadata.labels"),
                "Invalid value: `selector` does not match template `labels`",
                rules::VALIDATE_JOB_SPEC,
            );
        }
    }

    /// `validateJobSpec` (k8s.io/kubernetes/pkg/apis/batch/validation).
    fn job_spec(&mut self, spec: &JobSpec, path: &str) {
        let rule = rules::VALIDATE_JOB_SPEC_INNER;
        let field = |name: &str| child(path, name);
        self.nonnegative(&field("parallelism"), spec.parallelism.map(i64::from));
        self.nonnegative(&field("completions"), spec.completions.map(i64::from));
        self.nonnegative(
            &field("activeDeadlineSeconds"),
            spec.active_deadline_seconds,
        );
        self.nonnegative(&field("backoffLimit"), spec.backoff_limit.map(i64::from));
        self.nonnegative(
            &field("ttlSecondsAfterFinished"),
            spec.ttl_seconds_after_finished.map(i64::from),
        );
        self.nonnegative(
            &field("backoffLimitPerIndex"),
            spec.backoff_limit_per_index.map(i64::from),
        );
        if spec.max_failed_indexes.is_some() {
            self.nonnegative(
                &field("maxFailedIndexes"),
                spec.max_failed_indexes.map(i64::from),
            );
            if spec.backoff_limit_per_index.is_none() {
                self.push(
                    field("backoffLimitPerIndex"),
                    "Required value: when maxFailedIndexes is specified",
                    rule,
                );
            }
        }
        if let Some(managed_by) = &spec.managed_by {
            for msg in is_domain_prefixed_path(managed_by) {
                self.push(field("managedBy"), msg, rules::IS_DOMAIN_PREFIXED_PATH);
            }
            if managed_by.len() > MAX_MANAGED_BY_LENGTH {
                self.push(
                    field("managedBy"),
                    format!("Too long: may not be longer than {MAX_MANAGED_BY_LENGTH}"),
                    rule,
                );
            }
        }
        let mode = spec.completion_mode.as_deref();
        if let Some(mode) = mode {
            if mode != NON_INDEXED && mode != INDEXED {
                self.push(
                    field("completionMode"),
                    format!(
                        "Unsupported value: {mode:?}: supported values: \"NonIndexed\", \"Indexed\""
                    ),
                    rule,
                );
            }
            if mode == INDEXED {
                if spec.completions.is_none() {
                    self.push(
                        field("completions"),
                        "Required value: when completion mode is Indexed",
                        rule,
                    );
                }
                if let Some(parallelism) = spec
                    .parallelism
                    .filter(|&p| p > MAX_PARALLELISM_FOR_INDEXED_JOB)
                {
                    self.push(
                        field("parallelism"),
                        format!(
                            "Invalid value: {parallelism}: must be less than or equal to \
                             {MAX_PARALLELISM_FOR_INDEXED_JOB} when completion mode is Indexed"
                        ),
                        rule,
                    );
                }
                if let (Some(completions), Some(max_failed)) =
                    (spec.completions, spec.max_failed_indexes)
                    && max_failed > completions
                {
                    self.push(
                        field("maxFailedIndexes"),
                        format!(
                            "Invalid value: {max_failed}: must be less than or equal to completions"
                        ),
                        rule,
                    );
                }
                if let Some(max_failed) = spec
                    .max_failed_indexes
                    .filter(|&m| m > MAX_FAILED_INDEXES_FOR_INDEXED_JOB)
                {
                    self.push(
                        field("maxFailedIndexes"),
                        format!(
                            "Invalid value: {max_failed}: must be less than or equal to \
                             {MAX_FAILED_INDEXES_FOR_INDEXED_JOB}"
                        ),
                        rule,
                    );
                }
                if spec.completions.is_some_and(|n| n > COMPLETIONS_SOFT_LIMIT)
                    && spec.backoff_limit_per_index.is_some()
                {
                    if spec.max_failed_indexes.is_none() {
                        self.push(
                            field("maxFailedIndexes"),
                            format!(
                                "Required value: must be specified when completions is above \
                                 {COMPLETIONS_SOFT_LIMIT}"
                            ),
                            rule,
                        );
                    }
                    if let Some(parallelism) = spec
                        .parallelism
                        .filter(|&p| p > PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS)
                    {
                        self.push(
                            field("parallelism"),
                            format!(
                                "Invalid value: {parallelism}: must be less than or equal to \
                                 {PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS} when completions are \
                                 above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per \
                                 index"
                            ),
                            rule,
                        );
                    }
                    if let Some(max_failed) = spec
                        .max_failed_indexes
                        .filter(|&m| m > MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS)
                    {
                        self.push(
                            field("maxFailedIndexes"),
                            format!(
                                "Invalid value: {max_failed}: must be less than or equal to \
                                 {MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS} when \
                                 completions are above {COMPLETIONS_SOFT_LIMIT} and used with \
                                 backoff limit per index"
                            ),
                            rule,
                        );
                    }
                }
            }
        }
        if mode.is_none() || mode == Some(NON_INDEXED) {
            if let Some(value) = spec.backoff_limit_per_index {
                self.push(
                    field("backoffLimitPerIndex"),
                    format!("Invalid value: {value}: requires indexed completion mode"),
                    rule,
                );
            }
            if let Some(value) = spec.max_failed_indexes {
                self.push(
                    field("maxFailedIndexes"),
                    format!("Invalid value: {value}: requires indexed completion mode"),
                    rule,
                );
            }
        }
        if let Some(policy) = &spec.pod_failure_policy {
            self.pod_failure_policy(spec, policy, &field("podFailurePolicy"));
        }
        if spec.success_policy.is_some() {
            if mode != Some(INDEXED) {
                self.push(
                    field("successPolicy"),
                    "Invalid value: requires indexed completion mode",
                    rule,
                );
            } else {
                self.success_policy(spec, &field("successPolicy"));
            }
        }
        self.pod_replacement_policy(spec, &field("podReplacementPolicy"));
        self.pod_template(&spec.template, &field("template"));

        // The template's restartPolicy, after SetDefaults_PodSpec turned "" into Always.
        let restart_policy = spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.restart_policy.as_deref())
            .unwrap_or_default();
        let restart_path = field("template.spec.restartPolicy");
        if restart_policy.is_empty() || restart_policy == "Always" {
            self.push(
                restart_path,
                "Required value: valid values: \"OnFailure\", \"Never\"",
                rule,
            );
        } else if restart_policy != "OnFailure" && restart_policy != "Never" {
            self.push(
                restart_path,
                format!(
                    "Unsupported value: {restart_policy:?}: supported values: \"OnFailure\", \
                     \"Never\""
                ),
                rule,
            );
        } else if spec.pod_failure_policy.is_some() && restart_policy != "Never" {
            self.push(
                restart_path,
                format!(
                    "Invalid value: {restart_policy:?}: only \"Never\" is supported when \
                     podFailurePolicy is specified"
                ),
                rule,
            );
        }
    }

    /// `validatePodFailurePolicy` and `validatePodFailurePolicyRule*`.
    fn pod_failure_policy(&mut self, spec: &JobSpec, policy: &PodFailurePolicy, path: &str) {
        // k8s.io/kubernetes/pkg/apis/batch/validation.validatePodFailurePolicy
        let rules_path = child(path, "rules");
        if policy.rules.len() > MAX_POD_FAILURE_POLICY_RULES {
            self.push(
                &rules_path,
                format!(
                    "Too many: {}: must have at most {MAX_POD_FAILURE_POLICY_RULES} items",
                    policy.rules.len()
                ),
                rules::VALIDATE_POD_FAILURE_POLICY,
            );
        }
        let pod = spec.template.spec.as_ref();
        let container_names: BTreeSet<&str> = pod
            .into_iter()
            .flat_map(|pod| {
                pod.containers
                    .iter()
                    .chain(pod.init_containers.iter().flatten())
            })
            .map(|c| c.name.as_str())
            .collect();
        const ACTIONS: [&str; 4] = ["Count", "FailIndex", "FailJob", "Ignore"];
        for (i, rule) in policy.rules.iter().enumerate() {
            let rule_path = index(&rules_path, i);
            // validatePodFailurePolicyRule
            let action_path = child(&rule_path, "action");
            if rule.action.is_empty() {
                self.push(
                    &action_path,
                    "Required value: valid values: [\"Count\" \"FailIndex\" \"FailJob\" \"Ignore\"]",
                    rules::VALIDATE_POD_FAILURE_POLICY_RULE,
                );
            } else if rule.action == "FailIndex" {
                if spec.backoff_limit_per_index.is_none() {
                    self.push(
                        &action_path,
                        "Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
                        rules::VALIDATE_POD_FAILURE_POLICY_RULE,
                    );
                }
            } else if !ACTIONS.contains(&rule.action.as_str()) {
                self.push(
                    &action_path,
                    format!(
                        "Unsupported value: {:?}: supported values: \"Count\", \"FailIndex\", \
                         \"FailJob\", \"Ignore\"",
                        rule.action
                    ),
                    rules::VALIDATE_POD_FAILURE_POLICY_RULE,
                );
            }
            let patterns = rule.on_pod_conditions.as_deref().unwrap_or_default();
            if let Some(on_exit_codes) = &rule.on_exit_codes {
                let exit_path = child(&rule_path, "onExitCodes");
                let r = rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES;
                let operator = on_exit_codes.operator.as_str();
                if operator.is_empty() {
                    self.push(
                        child(&exit_path, "operator"),
                        "Required value: valid values: [\"In\" \"NotIn\"]",
                        r,
                    );
                } else if operator != "In" && operator != "NotIn" {
                    self.push(
                        child(&exit_path, "operator"),
                        format!(
                            "Unsupported value: {operator:?}: supported values: \"In\", \"NotIn\""
                        ),
                        r,
                    );
                }
                if let Some(container) = &on_exit_codes.container_name
                    && !container_names.contains(container.as_str())
                {
                    self.push(
                        child(&exit_path, "containerName"),
                        format!(
                            "Invalid value: {container:?}: must be one of the container or \
                             initContainer names in the pod template"
                        ),
                        r,
                    );
                }
                let values_path = child(&exit_path, "values");
                let values = &on_exit_codes.values;
                if values.is_empty() {
                    self.push(
                        &values_path,
                        "Invalid value: []int32{}: at least one value is required",
                        r,
                    );
                } else if values.len() > MAX_POD_FAILURE_POLICY_ON_EXIT_CODES_VALUES {
                    self.push(
                        &values_path,
                        format!(
                            "Too many: {}: must have at most \
                             {MAX_POD_FAILURE_POLICY_ON_EXIT_CODES_VALUES} items",
                            values.len()
                        ),
                        r,
                    );
                }
                let mut seen = BTreeSet::new();
                let mut ordered = true;
                for (j, &value) in values.iter().enumerate() {
                    if operator == "In" && value == 0 {
                        self.push(
                            index(&values_path, j),
                            "Invalid value: 0: must not be 0 for the In operator",
                            r,
                        );
                    }
                    if !seen.insert(value) {
                        self.push(
                            index(&values_path, j),
                            format!("Duplicate value: {value}"),
                            r,
                        );
                    }
                    if j > 0 && values[j - 1] > value {
                        ordered = false;
                    }
                }
                if !ordered {
                    self.push(
                        &values_path,
                        format!("Invalid value: {values:?}: must be ordered"),
                        r,
                    );
                }
            }
            if !patterns.is_empty() {
                let cond_path = child(&rule_path, "onPodConditions");
                let r = rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_POD_CONDITIONS;
                if patterns.len() > MAX_POD_FAILURE_POLICY_ON_POD_CONDITIONS_PATTERNS {
                    self.push(
                        &cond_path,
                        format!(
                            "Too many: {}: must have at most \
                             {MAX_POD_FAILURE_POLICY_ON_POD_CONDITIONS_PATTERNS} items",
                            patterns.len()
                        ),
                        r,
                    );
                }
                for (j, pattern) in patterns.iter().enumerate() {
                    let pattern_path = index(&cond_path, j);
                    for msg in is_qualified_name(&pattern.type_) {
                        self.push(
                            child(&pattern_path, "type"),
                            format!("Invalid value: {:?}: {msg}", pattern.type_),
                            r,
                        );
                    }
                    // An empty status was defaulted to "True"
                    // (SetDefaults_PodFailurePolicyOnPodConditionsPattern).
                    if !["False", "True", "Unknown"].contains(&pattern.status.as_str()) {
                        self.push(
                            child(&pattern_path, "status"),
                            format!(
                                "Unsupported value: {:?}: supported values: \"False\", \
                                 \"True\", \"Unknown\"",
                                pattern.status
                            ),
                            r,
                        );
                    }
                }
            }
            match (rule.on_exit_codes.is_some(), !patterns.is_empty()) {
                (true, true) => self.push(
                    &rule_path,
                    "Invalid value: specifying both OnExitCodes and OnPodConditions is not \
                     supported",
                    rules::VALIDATE_POD_FAILURE_POLICY_RULE,
                ),
                (false, false) => self.push(
                    &rule_path,
                    "Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
                    rules::VALIDATE_POD_FAILURE_POLICY_RULE,
                ),
                _ => {}
            }
        }
    }

    /// `validatePodReplacementPolicy`.
    fn pod_replacement_policy(&mut self, spec: &JobSpec, path: &str) {
        // k8s.io/kubernetes/pkg/apis/batch/validation.validatePodReplacementPolicy
        let Some(policy) = spec.pod_replacement_policy.as_deref() else {
            return;
        };
        if spec.pod_failure_policy.is_some() {
            if policy != "Failed" {
                self.push(
                    path,
                    format!("Unsupported value: {policy:?}: supported values: \"Failed\""),
                    rules::VALIDATE_POD_REPLACEMENT_POLICY,
                );
            }
        } else if policy != "Failed" && policy != "TerminatingOrFailed" {
            self.push(
                path,
                format!(
                    "Unsupported value: {policy:?}: supported values: \"Failed\", \
                     \"TerminatingOrFailed\""
                ),
                rules::VALIDATE_POD_REPLACEMENT_POLICY,
            );
        }
    }

    /// `validateSuccessPolicy` and `validateSuccessPolicyRule`.
    fn success_policy(&mut self, spec: &JobSpec, path: &str) {
        // k8s.io/kubernetes/pkg/apis/batch/validation.validateSuccessPolicy
        let r = rules::VALIDATE_SUCCESS_POLICY;
        let Some(policy) = &spec.success_policy else {
            return;
        };
        let rules_path = child(path, "rules");
        if policy.rules.is_empty() {
            self.push(
                &rules_path,
                "Required value: at least one rules must be specified when the successPolicy is \
                 specified",
                r,
            );
        }
        if policy.rules.len() > MAX_SUCCESS_POLICY_RULE {
            self.push(
                &rules_path,
                format!(
                    "Too many: {}: must have at most {MAX_SUCCESS_POLICY_RULE} items",
                    policy.rules.len()
                ),
                r,
            );
        }
        let completions = spec.completions.unwrap_or(0);
        for (i, rule) in policy.rules.iter().enumerate() {
            let rule_path = index(&rules_path, i);
            if rule.succeeded_count.is_none() && rule.succeeded_indexes.is_none() {
                self.push(
                    &rule_path,
                    "Required value: at least one of succeededCount or succeededIndexes must be \
                     specified",
                    r,
                );
            }
            let mut total_indexes = 0;
            if let Some(indexes) = &rule.succeeded_indexes {
                let indexes_path = child(&rule_path, "succeededIndexes");
                if indexes.len() > MAX_JOB_SUCCESS_POLICY_SUCCEEDED_INDEXES_LIMIT {
                    self.push(
                        &indexes_path,
                        format!(
                            "Too long: must have at most \
                             {MAX_JOB_SUCCESS_POLICY_SUCCEEDED_INDEXES_LIMIT} bytes"
                        ),
                        r,
                    );
                }
                match indexes_total(indexes, completions) {
                    Ok(total) => total_indexes = total,
                    Err(err) => self.push(
                        &indexes_path,
                        format!(
                            "Invalid value: {indexes:?}: error parsing succeededIndexes: {err}"
                        ),
                        r,
                    ),
                }
            }
            if let Some(count) = rule.succeeded_count {
                let count_path = child(&rule_path, "succeededCount");
                self.nonnegative(&count_path, Some(i64::from(count)));
                if count > completions {
                    self.push(
                        &count_path,
                        format!(
                            "Invalid value: {count}: must be less than or equal to {completions} \
                             (the number of specified completions)"
                        ),
                        r,
                    );
                }
                if rule.succeeded_indexes.is_some() && count > total_indexes {
                    self.push(
                        &count_path,
                        format!(
                            "Invalid value: {count}: must be less than or equal to \
                             {total_indexes} (the number of indexes in the specified \
                             succeededIndexes field)"
                        ),
                        r,
                    );
                }
            }
        }
    }
}

/// k8s.io/kubernetes/pkg/apis/batch/validation.validateIndexesFormat: the number of indexes
/// in `"1,3,5-9"`.
fn indexes_total(indexes: &str, completions: i32) -> Result<i32, String> {
    if indexes.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total: i64 = 0;
    for interval in indexes.split(',') {
        let (x, y) = parse_index_interval(interval, completions)?;
        if let Some(last) = last
            && last >= x
        {
            return Err(format!(
                "non-increasing order, previous: {last}, current: {x}"
            ));
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total as i32)
}

/// k8s.io/kubernetes/pkg/apis/batch/validation.parseIndexInterval.
fn parse_index_interval(interval: &str, completions: i32) -> Result<(i64, i64), String> {
    let limits: Vec<&str> = interval.split('-').collect();
    if limits.len() > 2 {
        return Err(format!(
            "the fragment {interval:?} violates the requirement that an index interval can have \
             at most two parts separated by '-'"
        ));
    }
    let parse = |s: &str| {
        parse_go_int64(s)
            .ok_or_else(|| format!("cannot convert string to integer for index: {s:?}"))
    };
    let x = parse(limits[0])?;
    if x >= i64::from(completions) {
        return Err(format!("too large index: {:?}", limits[0]));
    }
    if let Some(second) = limits.get(1) {
        let y = parse(second)?;
        if y >= i64::from(completions) {
            return Err(format!("too large index: {second:?}"));
        }
        if x >= y {
            return Err(format!("non-increasing order, previous: {x}, current: {y}"));
        }
        return Ok((x, y));
    }
    Ok((x, x))
}

/// k8s.io/apimachinery/pkg/util/validation.IsDomainPrefixedPath.
fn is_domain_prefixed_path(value: &str) -> Vec<String> {
    if value.is_empty() {
        return vec!["Required value".into()];
    }
    let Some((host, path)) = value
        .split_once('/')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
    else {
        return vec![format!(
            "Invalid value: {value:?}: must be a domain-prefixed path (such as \"acme.io/foo\")"
        )];
    };
    let mut errs: Vec<String> = is_dns1123_subdomain(host)
        .into_iter()
        .map(|msg| format!("Invalid value: {host:?}: {msg}"))
        .collect();
    // httpPathFmt: [A-Za-z0-9/\-._~%!$&'()*+,;=:]+
    let http_path_char = |c: char| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c);
    if !path.chars().all(http_path_char) {
        errs.push(format!(
            "Invalid value: {path:?}: Invalid path (regex used for validation is \
             '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')"
        ));
    }
    errs
}

// ----------------------------------------------------------------------------------------
// Pod templates: k8s.io/kubernetes/pkg/apis/core/validation
// ----------------------------------------------------------------------------------------

impl Checker {
    /// `ValidatePodTemplateSpec`.
    fn pod_template(&mut self, template: &PodTemplateSpec, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidatePodTemplateSpec
        let meta = template.metadata.as_ref();
        self.labels(&child(path, "labels"), meta.and_then(|m| m.labels.as_ref()));
        self.annotations(
            &child(path, "annotations"),
            meta.and_then(|m| m.annotations.as_ref()),
        );
        let default_pod = PodSpec::default();
        let pod = template.spec.as_ref().unwrap_or(&default_pod);
        self.pod_spec(pod, &child(path, "spec"));
        if pod
            .ephemeral_containers
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            self.push(
                child(path, "spec.ephemeralContainers"),
                "Forbidden: ephemeral containers not allowed in pod template",
                rules::VALIDATE_POD_TEMPLATE_SPEC,
            );
        }
    }

    /// `ValidatePodSpec`, for the fields a Job template uses.
    fn pod_spec(&mut self, pod: &PodSpec, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidatePodSpec
        let r = rules::VALIDATE_POD_SPEC;
        let volumes = self.volumes(
            pod.volumes.as_deref().unwrap_or_default(),
            &child(path, "volumes"),
        );

        // validateContainers
        let containers_path = child(path, "containers");
        if pod.containers.is_empty() {
            self.push(
                &containers_path,
                "Required value",
                rules::VALIDATE_CONTAINERS,
            );
        }
        let mut names = BTreeSet::new();
        for (i, container) in pod.containers.iter().enumerate() {
            let at = index(&containers_path, i);
            self.container_common(container, &volumes, &at);
            if !names.insert(container.name.as_str()) {
                self.push(
                    child(&at, "name"),
                    format!("Duplicate value: {:?}", container.name),
                    rules::VALIDATE_CONTAINERS,
                );
            }
            if container.restart_policy.is_some() {
                self.push(
                    child(&at, "restartPolicy"),
                    "Forbidden: may not be set for non-init containers",
                    rules::VALIDATE_CONTAINERS,
                );
            }
        }
        // validateInitContainers: names unique across regular and init containers.
        let init_path = child(path, "initContainers");
        for (i, container) in pod.init_containers.iter().flatten().enumerate() {
            let at = index(&init_path, i);
            self.container_common(container, &volumes, &at);
            if let Some(policy) = container.restart_policy.as_deref()
                && policy != "Always"
            {
                self.push(
                    child(&at, "restartPolicy"),
                    format!("Unsupported value: {policy:?}: supported values: \"Always\""),
                    rules::VALIDATE_INIT_CONTAINERS,
                );
            }
            if !names.insert(container.name.as_str()) {
                self.push(
                    child(&at, "name"),
                    format!("Duplicate value: {:?}", container.name),
                    rules::VALIDATE_INIT_CONTAINERS,
                );
            } else if container.name.is_empty() {
                names.remove("");
            }
        }

        // validateRestartPolicy; an empty policy was defaulted to Always (SetDefaults_PodSpec).
        if let Some(policy) = pod.restart_policy.as_deref().filter(|p| !p.is_empty())
            && !["Always", "OnFailure", "Never"].contains(&policy)
        {
            self.push(
                child(path, "restartPolicy"),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \
                     \"Never\""
                ),
                rules::VALIDATE_RESTART_POLICY,
            );
        }
        // validateDNSPolicy; empty was defaulted to ClusterFirst.
        if let Some(policy) = pod.dns_policy.as_deref().filter(|p| !p.is_empty())
            && !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"].contains(&policy)
        {
            self.push(
                child(path, "dnsPolicy"),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"ClusterFirstWithHostNet\", \
                     \"ClusterFirst\", \"Default\", \"None\""
                ),
                rules::VALIDATE_DNS_POLICY,
            );
        }
        self.labels(&child(path, "nodeSelector"), pod.node_selector.as_ref());
        self.pod_security_context(
            pod.security_context.as_ref(),
            &child(path, "securityContext"),
        );
        if let Some(account) = pod
            .service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            // ValidateServiceAccountName = NameIsDNSSubdomain
            for msg in is_dns1123_subdomain(account) {
                self.push(
                    child(path, "serviceAccountName"),
                    format!("Invalid value: {account:?}: {msg}"),
                    r,
                );
            }
        }
        if let Some(node) = pod.node_name.as_deref().filter(|s| !s.is_empty()) {
            for msg in is_dns1123_subdomain(node) {
                self.push(
                    child(path, "nodeName"),
                    format!("Invalid value: {node:?}: {msg}"),
                    r,
                );
            }
        }
        if let Some(deadline) = pod.active_deadline_seconds
            && !(1..=i64::from(i32::MAX)).contains(&deadline)
        {
            self.push(
                child(path, "activeDeadlineSeconds"),
                format!("Invalid value: {deadline}: must be between 1 and 2147483647, inclusive"),
                r,
            );
        }
        for (field, value) in [("hostname", &pod.hostname), ("subdomain", &pod.subdomain)] {
            if let Some(value) = value.as_deref().filter(|s| !s.is_empty()) {
                for msg in is_dns1123_label(value) {
                    self.push(
                        child(path, field),
                        format!("Invalid value: {value:?}: {msg}"),
                        r,
                    );
                }
            }
        }
        if let Some(class) = pod.priority_class_name.as_deref().filter(|s| !s.is_empty()) {
            for msg in is_dns1123_subdomain(class) {
                self.push(
                    child(path, "priorityClassName"),
                    format!("Invalid value: {class:?}: {msg}"),
                    r,
                );
            }
        }
        self.tolerations(
            pod.tolerations.as_deref().unwrap_or_default(),
            &child(path, "tolerations"),
        );
    }

    /// `ValidateVolumes`: the names of the volumes that validated.
    fn volumes(&mut self, volumes: &[Volume], path: &str) -> BTreeSet<String> {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateVolumes
        let mut names = BTreeSet::new();
        for (i, volume) in volumes.iter().enumerate() {
            let at = index(path, i);
            let before = self.out.len();
            self.volume_source(volume, &at);
            let name_path = child(&at, "name");
            if volume.name.is_empty() {
                self.push(&name_path, "Required value", rules::VALIDATE_VOLUMES);
            } else {
                for msg in is_dns1123_label(&volume.name) {
                    self.push(
                        &name_path,
                        format!("Invalid value: {:?}: {msg}", volume.name),
                        rules::IS_DNS1123_LABEL,
                    );
                }
            }
            if names.contains(&volume.name) {
                self.push(
                    &name_path,
                    format!("Duplicate value: {:?}", volume.name),
                    rules::VALIDATE_VOLUMES,
                );
            }
            if self.out.len() == before {
                names.insert(volume.name.clone());
            }
        }
        names
    }

    /// `validateVolumeSource`: exactly one source; an emptyDir's sizeLimit not negative.
    fn volume_source(&mut self, volume: &Volume, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateVolumeSource
        let sources = match serde_json::to_value(volume) {
            Ok(Value::Object(map)) => map
                .iter()
                .filter(|(k, v)| k.as_str() != "name" && !v.is_null())
                .count(),
            _ => 0,
        };
        if sources == 0 {
            self.push(
                path,
                "Required value: must specify a volume type",
                rules::VALIDATE_VOLUME_SOURCE,
            );
        } else if sources > 1 {
            self.push(
                path,
                "Forbidden: may not specify more than 1 volume type",
                rules::VALIDATE_VOLUME_SOURCE,
            );
        }
        if let Some(size) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        {
            let size_path = child(path, "emptyDir.sizeLimit");
            match parse_quantity(&size.0) {
                Err(err) => self.push(size_path, err, rules::PARSE_QUANTITY),
                Ok(q) if q.is_negative() => self.push(
                    size_path,
                    "Forbidden: SizeLimit field must be a valid resource quantity",
                    rules::VALIDATE_VOLUME_SOURCE,
                ),
                Ok(_) => {}
            }
        }
    }

    /// `validateContainerCommon`.
    fn container_common(&mut self, container: &Container, volumes: &BTreeSet<String>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateContainerCommon
        let r = rules::VALIDATE_CONTAINER_COMMON;
        let name_path = child(path, "name");
        if container.name.is_empty() {
            self.push(&name_path, "Required value", r);
        } else {
            for msg in is_dns1123_label(&container.name) {
                self.push(
                    &name_path,
                    format!("Invalid value: {:?}: {msg}", container.name),
                    rules::IS_DNS1123_LABEL,
                );
            }
        }
        if container.image.as_deref().unwrap_or_default().is_empty() {
            self.push(child(path, "image"), "Required value", r);
        }
        // An empty policy was defaulted to File (SetDefaults_Container).
        if let Some(policy) = container
            .termination_message_policy
            .as_deref()
            .filter(|p| !p.is_empty())
            && policy != "File"
            && policy != "FallbackToLogsOnError"
        {
            self.push(
                child(path, "terminationMessagePolicy"),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"File\", \
                     \"FallbackToLogsOnError\""
                ),
                r,
            );
        }
        self.container_ports(container, &child(path, "ports"));
        self.env(
            container.env.as_deref().unwrap_or_default(),
            &child(path, "env"),
        );
        self.env_from(
            container.env_from.as_deref().unwrap_or_default(),
            &child(path, "envFrom"),
        );
        self.volume_mounts(container, volumes, &child(path, "volumeMounts"));
        // validatePullPolicy; an empty policy was defaulted from the image tag.
        if let Some(policy) = container
            .image_pull_policy
            .as_deref()
            .filter(|p| !p.is_empty())
            && !["Always", "IfNotPresent", "Never"].contains(&policy)
        {
            self.push(
                child(path, "imagePullPolicy"),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"Always\", \
                     \"IfNotPresent\", \"Never\""
                ),
                rules::VALIDATE_PULL_POLICY,
            );
        }
        if let Some(resources) = &container.resources {
            self.resource_requirements(resources, &child(path, "resources"));
        }
        self.security_context(
            container.security_context.as_ref(),
            &child(path, "securityContext"),
        );
    }

    /// `validateContainerPorts`; an empty protocol was defaulted to TCP.
    fn container_ports(&mut self, container: &Container, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateContainerPorts
        let r = rules::VALIDATE_CONTAINER_PORTS;
        let mut names = BTreeSet::new();
        for (i, port) in container.ports.iter().flatten().enumerate() {
            let at = index(path, i);
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let errs = is_valid_port_name(name);
                if !errs.is_empty() {
                    for msg in errs {
                        self.push(
                            child(&at, "name"),
                            format!("Invalid value: {name:?}: {msg}"),
                            r,
                        );
                    }
                } else if !names.insert(name) {
                    self.push(child(&at, "name"), format!("Duplicate value: {name:?}"), r);
                }
            }
            if port.container_port == 0 {
                self.push(child(&at, "containerPort"), "Required value", r);
            } else if !(1..=65535).contains(&port.container_port) {
                self.push(
                    child(&at, "containerPort"),
                    format!(
                        "Invalid value: {}: must be between 1 and 65535, inclusive",
                        port.container_port
                    ),
                    r,
                );
            }
            if let Some(host_port) = port.host_port.filter(|&p| p != 0)
                && !(1..=65535).contains(&host_port)
            {
                self.push(
                    child(&at, "hostPort"),
                    format!("Invalid value: {host_port}: must be between 1 and 65535, inclusive"),
                    r,
                );
            }
            if let Some(protocol) = port.protocol.as_deref().filter(|p| !p.is_empty())
                && !["TCP", "UDP", "SCTP"].contains(&protocol)
            {
                self.push(
                    child(&at, "protocol"),
                    format!(
                        "Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \
                         \"UDP\""
                    ),
                    r,
                );
            }
        }
    }

    /// `ValidateEnv` with `AllowRelaxedEnvironmentVariableValidation` (on by default in 1.33),
    /// and `validateEnvVarValueFrom` for the sources the operator uses.
    fn env(&mut self, vars: &[EnvVar], path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateEnv
        for (i, var) in vars.iter().enumerate() {
            let at = index(path, i);
            let name_path = child(&at, "name");
            if var.name.is_empty() {
                self.push(&name_path, "Required value", rules::VALIDATE_ENV);
            } else {
                for msg in is_relaxed_env_var_name(&var.name) {
                    self.push(
                        &name_path,
                        format!("Invalid value: {:?}: {msg}", var.name),
                        rules::IS_RELAXED_ENV_VAR_NAME,
                    );
                }
            }
            let Some(from) = &var.value_from else {
                continue;
            };
            // validateEnvVarValueFrom
            let from_path = child(&at, "valueFrom");
            let r = rules::VALIDATE_ENV_VAR_VALUE_FROM;
            let mut sources = 0;
            if from.field_ref.is_some() {
                sources += 1;
            }
            if from.resource_field_ref.is_some() {
                sources += 1;
            }
            if let Some(selector) = &from.config_map_key_ref {
                sources += 1;
                self.key_selector(
                    &selector.name,
                    &selector.key,
                    &child(&from_path, "configMapKeyRef"),
                    rules::VALIDATE_CONFIG_MAP_KEY_SELECTOR,
                );
            }
            if let Some(selector) = &from.secret_key_ref {
                sources += 1;
                self.key_selector(
                    &selector.name,
                    &selector.key,
                    &child(&from_path, "secretKeyRef"),
                    rules::VALIDATE_SECRET_KEY_SELECTOR,
                );
            }
            if sources == 0 {
                self.push(
                    &from_path,
                    "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, \
                     `configMapKeyRef` or `secretKeyRef`",
                    r,
                );
            } else if !var.value.as_deref().unwrap_or_default().is_empty() {
                self.push(
                    &from_path,
                    "Invalid value: \"\": may not be specified when `value` is not empty",
                    r,
                );
            } else if sources > 1 {
                self.push(
                    &from_path,
                    "Invalid value: \"\": may not have more than one field specified at a time",
                    r,
                );
            }
        }
    }

    /// `validateSecretKeySelector` / `validateConfigMapKeySelector`: the name a DNS
    /// subdomain (ValidateSecretName), the key required and a valid config key.
    fn key_selector(&mut self, name: &str, key_: &str, path: &str, rule: &'static str) {
        for msg in is_dns1123_subdomain(name) {
            self.push(
                child(path, "name"),
                format!("Invalid value: {name:?}: {msg}"),
                rule,
            );
        }
        if key_.is_empty() {
            self.push(child(path, "key"), "Required value", rule);
        } else {
            for msg in is_config_map_key(key_) {
                self.push(
                    child(path, "key"),
                    format!("Invalid value: {key_:?}: {msg}"),
                    rules::IS_CONFIG_MAP_KEY,
                );
            }
        }
    }

    /// `ValidateEnvFrom` (relaxed prefix names in 1.33).
    fn env_from(&mut self, sources: &[EnvFromSource], path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateEnvFrom
        let r = rules::VALIDATE_ENV_FROM;
        for (i, source) in sources.iter().enumerate() {
            let at = index(path, i);
            if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
                for msg in is_relaxed_env_var_name(prefix) {
                    self.push(
                        child(&at, "prefix"),
                        format!("Invalid value: {prefix:?}: {msg}"),
                        r,
                    );
                }
            }
            let mut count = 0;
            for (field, name) in [
                (
                    "configMapRef",
                    source.config_map_ref.as_ref().map(|s| &s.name),
                ),
                ("secretRef", source.secret_ref.as_ref().map(|s| &s.name)),
            ] {
                let Some(name) = name else { continue };
                count += 1;
                let name_path = child(&child(&at, field), "name");
                if name.is_empty() {
                    self.push(name_path, "Required value", r);
                } else {
                    for msg in is_dns1123_subdomain(name) {
                        self.push(&name_path, format!("Invalid value: {name:?}: {msg}"), r);
                    }
                }
            }
            if count == 0 {
                self.push(
                    path,
                    "Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
                    r,
                );
            } else if count > 1 {
                self.push(
                    path,
                    "Invalid value: \"\": may not have more than one field specified at a time",
                    r,
                );
            }
        }
    }

    /// `ValidateVolumeMounts`: a known volume, a mount path, unique mount paths.
    fn volume_mounts(&mut self, container: &Container, volumes: &BTreeSet<String>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateVolumeMounts
        let r = rules::VALIDATE_VOLUME_MOUNTS;
        let mut mount_points = BTreeSet::new();
        for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let at = index(path, i);
            if mount.name.is_empty() {
                self.push(child(&at, "name"), "Required value", r);
            }
            if !volumes.contains(&mount.name) {
                self.push(
                    child(&at, "name"),
                    format!("Not found: {:?}", mount.name),
                    r,
                );
            }
            if mount.mount_path.is_empty() {
                self.push(child(&at, "mountPath"), "Required value", r);
            }
            if !mount_points.insert(mount.mount_path.as_str()) {
                self.push(
                    child(&at, "mountPath"),
                    format!("Invalid value: {:?}: must be unique", mount.mount_path),
                    r,
                );
            }
            let sub_path = mount.sub_path.as_deref().unwrap_or_default();
            let sub_path_expr = mount.sub_path_expr.as_deref().unwrap_or_default();
            if !sub_path.is_empty() && !sub_path_expr.is_empty() {
                self.push(
                    child(&at, "subPathExpr"),
                    format!(
                        "Invalid value: {sub_path_expr:?}: subPathExpr and subPath are mutually \
                         exclusive"
                    ),
                    r,
                );
            }
        }
    }

    /// `validateResourceRequirements` with `validateContainerResourceName`.
    fn resource_requirements(&mut self, requirements: &ResourceRequirements, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateResourceRequirements
        let r = rules::VALIDATE_RESOURCE_REQUIREMENTS;
        let limits_path = child(path, "limits");
        let requests_path = child(path, "requests");
        let mut limits = BTreeMap::new();
        let mut lim_cpu_or_memory = false;
        let mut req_cpu_or_memory = false;
        let mut hugepages = false;
        for (name, quantity) in requirements.limits.iter().flatten() {
            let at = key(&limits_path, name);
            self.container_resource_name(name, &at);
            if let Some(q) = self.resource_quantity(name, &quantity.0, &at) {
                limits.insert(name.clone(), q);
            }
            hugepages |= name.starts_with("hugepages-");
            lim_cpu_or_memory |= name == "cpu" || name == "memory";
        }
        for (name, quantity) in requirements.requests.iter().flatten() {
            let at = key(&requests_path, name);
            self.container_resource_name(name, &at);
            let request = self.resource_quantity(name, &quantity.0, &at);
            let overcommit = is_overcommit_allowed(name);
            let given_limit = requirements.limits.as_ref().and_then(|l| l.get(name));
            match (given_limit, limits.get(name), request) {
                (Some(limit_text), Some(limit), Some(request)) => {
                    let order = request.cmp(limit);
                    if order != Ordering::Equal && !overcommit {
                        self.push(
                            &requests_path,
                            format!(
                                "Invalid value: {:?}: must be equal to {name} limit of {:?}",
                                quantity.0, limit_text.0
                            ),
                            r,
                        );
                    } else if order == Ordering::Greater {
                        self.push(
                            &requests_path,
                            format!(
                                "Invalid value: {:?}: must be less than or equal to {name} limit \
                                 of {:?}",
                                quantity.0, limit_text.0
                            ),
                            r,
                        );
                    }
                }
                (None, _, _) if !overcommit => self.push(
                    &limits_path,
                    "Required value: Limit must be set for non overcommitable resources",
                    r,
                ),
                _ => {}
            }
            hugepages |= name.starts_with("hugepages-");
            req_cpu_or_memory |= name == "cpu" || name == "memory";
        }
        if hugepages && !lim_cpu_or_memory && !req_cpu_or_memory {
            self.push(path, "Forbidden: HugePages require cpu or memory", r);
        }
    }

    /// Parses a resource quantity and applies `ValidateResourceQuantityValue`.
    fn resource_quantity(&mut self, name: &str, value: &str, path: &str) -> Option<Quantity> {
        let q = match parse_quantity(value) {
            Ok(q) => q,
            Err(err) => {
                self.push(
                    path,
                    format!("Invalid value: {value:?}: {err}"),
                    rules::PARSE_QUANTITY,
                );
                return None;
            }
        };
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateResourceQuantityValue
        if q.is_negative() {
            self.push(
                path,
                format!("Invalid value: {value:?}: must be greater than or equal to 0"),
                rules::VALIDATE_RESOURCE_QUANTITY_VALUE,
            );
        }
        if is_extended_resource_name(name) && !q.is_whole() {
            self.push(
                path,
                format!("Invalid value: {value:?}: must be an integer"),
                rules::VALIDATE_RESOURCE_QUANTITY_VALUE,
            );
        }
        Some(q)
    }

    /// `validateContainerResourceName` (with `validateResourceName`).
    fn container_resource_name(&mut self, name: &str, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateContainerResourceName
        let r = rules::VALIDATE_CONTAINER_RESOURCE_NAME;
        let errs = is_qualified_name(name);
        let qualified = errs.is_empty();
        for msg in errs {
            self.push(path, format!("Invalid value: {name:?}: {msg}"), r);
        }
        let unprefixed = !name.contains('/');
        if qualified && unprefixed && !is_standard_resource_name(name) {
            self.push(
                path,
                format!(
                    "Invalid value: {name:?}: must be a standard resource type or fully qualified"
                ),
                r,
            );
        }
        if unprefixed {
            if !is_standard_container_resource_name(name) {
                self.push(
                    path,
                    format!("Invalid value: {name:?}: must be a standard resource for containers"),
                    r,
                );
            }
        } else if !is_native_resource(name) && !is_extended_resource_name(name) {
            self.push(
                path,
                format!("Invalid value: {name:?}: doesn't follow extended resource name standard"),
                r,
            );
        }
    }

    /// `ValidateSecurityContext` (container).
    fn security_context(&mut self, sc: Option<&SecurityContext>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateSecurityContext
        let Some(sc) = sc else { return };
        let r = rules::VALIDATE_SECURITY_CONTEXT;
        if let Some(uid) = sc.run_as_user {
            self.id_range(&child(path, "runAsUser"), uid, rules::IS_VALID_USER_ID);
        }
        if let Some(gid) = sc.run_as_group {
            self.id_range(&child(path, "runAsGroup"), gid, rules::IS_VALID_GROUP_ID);
        }
        self.seccomp_profile(sc.seccomp_profile.as_ref(), &child(path, "seccompProfile"));
        if sc.allow_privilege_escalation == Some(false) {
            if sc.privileged == Some(true) {
                self.push(
                    path,
                    "Invalid value: cannot set `allowPrivilegeEscalation` to false and \
                     `privileged` to true",
                    r,
                );
            }
            if sc
                .capabilities
                .as_ref()
                .is_some_and(|caps| caps.add.iter().flatten().any(|c| c == "CAP_SYS_ADMIN"))
            {
                self.push(
                    path,
                    "Invalid value: cannot set `allowPrivilegeEscalation` to false and \
                     `capabilities.Add` CAP_SYS_ADMIN",
                    r,
                );
            }
        }
        self.app_armor_profile(
            sc.app_armor_profile.as_ref(),
            &child(path, "appArmorProfile"),
        );
    }

    /// `validatePodSpecSecurityContext`.
    fn pod_security_context(&mut self, sc: Option<&PodSecurityContext>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validatePodSpecSecurityContext
        let Some(sc) = sc else { return };
        if let Some(gid) = sc.fs_group {
            self.id_range(&child(path, "fsGroup"), gid, rules::IS_VALID_GROUP_ID);
        }
        if let Some(uid) = sc.run_as_user {
            self.id_range(&child(path, "runAsUser"), uid, rules::IS_VALID_USER_ID);
        }
        if let Some(gid) = sc.run_as_group {
            self.id_range(&child(path, "runAsGroup"), gid, rules::IS_VALID_GROUP_ID);
        }
        for (i, &gid) in sc.supplemental_groups.iter().flatten().enumerate() {
            self.id_range(
                &index(&child(path, "supplementalGroups"), i),
                gid,
                rules::IS_VALID_GROUP_ID,
            );
        }
        if let Some(policy) = sc.fs_group_change_policy.as_deref()
            && policy != "OnRootMismatch"
            && policy != "Always"
        {
            self.push(
                child(path, "fsGroupChangePolicy"),
                format!(
                    "Unsupported value: {policy:?}: supported values: \"Always\", \
                     \"OnRootMismatch\""
                ),
                rules::VALIDATE_POD_SPEC_SECURITY_CONTEXT,
            );
        }
        self.seccomp_profile(sc.seccomp_profile.as_ref(), &child(path, "seccompProfile"));
        self.app_armor_profile(
            sc.app_armor_profile.as_ref(),
            &child(path, "appArmorProfile"),
        );
    }

    fn id_range(&mut self, path: &str, id: i64, rule: &'static str) {
        // IsValidUserID / IsValidGroupID: 0..=math.MaxInt32 in 1.33.
        if !(0..=MAX_ID).contains(&id) {
            self.push(
                path,
                format!("Invalid value: {id}: must be between 0 and {MAX_ID}, inclusive"),
                rule,
            );
        }
    }

    /// `validateSeccompProfileField` with `validateSeccompProfileType`.
    fn seccomp_profile(&mut self, profile: Option<&SeccompProfile>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.validateSeccompProfileField
        let Some(profile) = profile else { return };
        let r = rules::VALIDATE_SECCOMP_PROFILE_FIELD;
        match profile.type_.as_str() {
            "Localhost" | "RuntimeDefault" | "Unconfined" => {}
            "" => self.push(
                child(path, "type"),
                "Required value: type is required when seccompProfile is set",
                r,
            ),
            other => self.push(
                child(path, "type"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Localhost\", \
                     \"RuntimeDefault\", \"Unconfined\""
                ),
                r,
            ),
        }
        if profile.type_ == "Localhost" {
            if profile.localhost_profile.is_none() {
                self.push(
                    child(path, "localhostProfile"),
                    "Required value: must be set when seccomp type is Localhost",
                    r,
                );
            }
        } else if profile.localhost_profile.is_some() {
            self.push(
                child(path, "localhostProfile"),
                "Invalid value: can only be set when seccomp type is Localhost",
                r,
            );
        }
    }

    /// `ValidateAppArmorProfileField`.
    fn app_armor_profile(&mut self, profile: Option<&AppArmorProfile>, path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateAppArmorProfileField
        let Some(profile) = profile else { return };
        let r = rules::VALIDATE_APP_ARMOR_PROFILE_FIELD;
        match profile.type_.as_str() {
            "Localhost" => match profile.localhost_profile.as_deref() {
                None => self.push(
                    child(path, "localhostProfile"),
                    "Required value: must be set when AppArmor type is Localhost",
                    r,
                ),
                Some(local) => {
                    let trimmed = local.trim();
                    if trimmed != local {
                        self.push(
                            child(path, "localhostProfile"),
                            format!("Invalid value: {local:?}: must not be padded with whitespace"),
                            r,
                        );
                    } else if trimmed.is_empty() {
                        self.push(
                            child(path, "localhostProfile"),
                            "Required value: must be set when AppArmor type is Localhost",
                            r,
                        );
                    }
                    if local.len() > 4095 {
                        self.push(
                            child(path, "localhostProfile"),
                            "Too long: may not be more than 4095 bytes",
                            r,
                        );
                    }
                }
            },
            "RuntimeDefault" | "Unconfined" => {
                if profile.localhost_profile.is_some() {
                    self.push(
                        child(path, "localhostProfile"),
                        "Invalid value: can only be set when AppArmor type is Localhost",
                        r,
                    );
                }
            }
            "" => self.push(
                child(path, "type"),
                "Required value: type is required when appArmorProfile is set",
                r,
            ),
            other => self.push(
                child(path, "type"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Localhost\", \
                     \"RuntimeDefault\", \"Unconfined\""
                ),
                r,
            ),
        }
    }

    /// `ValidateTolerations`.
    fn tolerations(&mut self, tolerations: &[Toleration], path: &str) {
        // k8s.io/kubernetes/pkg/apis/core/validation.ValidateTolerations
        let r = rules::VALIDATE_TOLERATIONS;
        for (i, toleration) in tolerations.iter().enumerate() {
            let at = index(path, i);
            let key_ = toleration.key.as_deref().unwrap_or_default();
            let operator = toleration.operator.as_deref().unwrap_or_default();
            let value = toleration.value.as_deref().unwrap_or_default();
            let effect = toleration.effect.as_deref().unwrap_or_default();
            if !key_.is_empty() {
                for msg in is_qualified_name(key_) {
                    self.push(
                        child(&at, "key"),
                        format!("Invalid value: {key_:?}: {msg}"),
                        r,
                    );
                }
            }
            if key_.is_empty() && operator != "Exists" {
                self.push(
                    child(&at, "operator"),
                    format!(
                        "Invalid value: {operator:?}: operator must be Exists when `key` is \
                         empty, which means \"match all values and all keys\""
                    ),
                    r,
                );
            }
            if toleration.toleration_seconds.is_some() && effect != "NoExecute" {
                self.push(
                    child(&at, "effect"),
                    format!(
                        "Invalid value: {effect:?}: effect must be 'NoExecute' when \
                         `tolerationSeconds` is set"
                    ),
                    r,
                );
            }
            match operator {
                "Equal" | "" => {
                    let errs = is_valid_label_value(value);
                    if !errs.is_empty() {
                        self.push(
                            child(&at, "operator"),
                            format!("Invalid value: {value:?}: {}", errs.join(";")),
                            r,
                        );
                    }
                }
                "Exists" => {
                    if !value.is_empty() {
                        self.push(
                            child(&at, "operator"),
                            format!(
                                "Invalid value: {value:?}: value must be empty when `operator` \
                                 is 'Exists'"
                            ),
                            r,
                        );
                    }
                }
                other => self.push(
                    child(&at, "operator"),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"Equal\", \"Exists\""
                    ),
                    r,
                ),
            }
            if !effect.is_empty()
                && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
            {
                self.push(
                    child(&at, "effect"),
                    format!(
                        "Unsupported value: {effect:?}: supported values: \"NoSchedule\", \
                         \"PreferNoSchedule\", \"NoExecute\""
                    ),
                    r,
                );
            }
        }
    }
}

// k8s.io/kubernetes/pkg/apis/core/helper: resource name helpers.
fn is_native_resource(name: &str) -> bool {
    // IsNativeResource: unprefixed, or in the kubernetes.io/ namespace.
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended_resource_name(name: &str) -> bool {
    // IsExtendedResourceName
    if is_native_resource(name) || name.starts_with("requests.") {
        return false;
    }
    is_qualified_name(&format!("requests.{name}")).is_empty()
}

fn is_overcommit_allowed(name: &str) -> bool {
    // IsOvercommitAllowed
    is_native_resource(name) && !name.starts_with("hugepages-")
}

fn is_standard_container_resource_name(name: &str) -> bool {
    // IsStandardContainerResourceName
    ["cpu", "memory", "ephemeral-storage"].contains(&name) || name.starts_with("hugepages-")
}

fn is_standard_resource_name(name: &str) -> bool {
    // IsStandardResourceName (standardResources, IsQuotaHugePageResourceName)
    const STANDARD: [&str; 20] = [
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "pods",
        "resourcequotas",
        "services",
        "replicationcontrollers",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "storage",
        "requests.storage",
        "services.nodeports",
        "services.loadbalancers",
    ];
    STANDARD.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

// ----------------------------------------------------------------------------------------
// Job updates
// ----------------------------------------------------------------------------------------

/// What `ValidateJobUpdate` (with `ValidateJob` on the new object, as the Job strategy's
/// `ValidateUpdate` does) refuses when `old` is replaced by `new`.
///
/// Both objects should be in the same form (both as rendered, or both as stored): the
/// comparison of immutable fields is `apiequality.Semantic.DeepEqual` (empty and absent
/// lists and maps are equal, quantities compare by value) after `SetDefaults_Job`, but the
/// pod template's own defaults are not applied.
pub fn check_job_update(old: &Job, new: &Job) -> Vec<Violation> {
    let mut c = Checker {
        out: check_job(new),
    };
    c.object_meta_update(&old.metadata, &new.metadata, "metadata");

    // k8s.io/kubernetes/pkg/apis/batch/validation.ValidateJobSpecUpdate
    let old_spec = defaulted_job_spec(old.spec.as_ref());
    let new_spec = defaulted_job_spec(new.spec.as_ref());

    // validateCompletions, with AllowElasticIndexedJobs (ElasticIndexedJob is GA and on).
    // A field the update leaves as it was is unchanged even when only one side was
    // defaulted (a double may keep objects as the operator sent them).
    let old_raw = old.spec.clone().unwrap_or_default();
    let new_raw = new.spec.clone().unwrap_or_default();
    if old_raw.completions != new_raw.completions && old_spec.completions != new_spec.completions {
        if new_spec.completion_mode.as_deref() != Some(INDEXED) {
            c.push(
                "spec.completions",
                format!(
                    "Invalid value: {:?}: field is immutable",
                    new_spec.completions
                ),
                rules::VALIDATE_COMPLETIONS,
            );
        } else if let Some(completions) = new_spec.completions
            && Some(completions) != new_spec.parallelism
        {
            c.push(
                "spec.completions",
                format!(
                    "Invalid value: {completions}: can only be modified in tandem with \
                     spec.parallelism"
                ),
                rules::VALIDATE_COMPLETIONS,
            );
        }
    }
    // ValidateImmutableField for selector, completionMode, podFailurePolicy,
    // backoffLimitPerIndex, managedBy and successPolicy.
    let fields = [
        (
            "selector",
            to_json(&old_raw.selector),
            to_json(&new_raw.selector),
            to_json(&old_spec.selector),
            to_json(&new_spec.selector),
        ),
        (
            "completionMode",
            to_json(&old_raw.completion_mode),
            to_json(&new_raw.completion_mode),
            to_json(&old_spec.completion_mode),
            to_json(&new_spec.completion_mode),
        ),
        (
            "podFailurePolicy",
            to_json(&old_raw.pod_failure_policy),
            to_json(&new_raw.pod_failure_policy),
            to_json(&old_spec.pod_failure_policy),
            to_json(&new_spec.pod_failure_policy),
        ),
        (
            "backoffLimitPerIndex",
            to_json(&old_raw.backoff_limit_per_index),
            to_json(&new_raw.backoff_limit_per_index),
            to_json(&old_spec.backoff_limit_per_index),
            to_json(&new_spec.backoff_limit_per_index),
        ),
        (
            "managedBy",
            to_json(&old_raw.managed_by),
            to_json(&new_raw.managed_by),
            to_json(&old_spec.managed_by),
            to_json(&new_spec.managed_by),
        ),
        (
            "successPolicy",
            to_json(&old_raw.success_policy),
            to_json(&new_raw.success_policy),
            to_json(&old_spec.success_policy),
            to_json(&new_spec.success_policy),
        ),
    ];
    for (field, old_raw, new_raw, old_defaulted, new_defaulted) in fields {
        if !semantic_eq(&old_raw, &new_raw) && !semantic_eq(&old_defaulted, &new_defaulted) {
            c.push(
                format!("spec.{field}"),
                format!("Invalid value: {new_defaulted}: field is immutable"),
                rules::VALIDATE_IMMUTABLE_FIELD,
            );
        }
    }

    // validatePodTemplateUpdate: the template is immutable, except that a Job suspended and
    // never started (old.spec.suspend && old.status.startTime == nil) may change its
    // scheduling directives (AllowMutableSchedulingDirectives, set by the Job strategy).
    let suspended = old_spec.suspend == Some(true);
    let not_started = old
        .status
        .as_ref()
        .and_then(|status| status.start_time.as_ref())
        .is_none();
    let mut old_template = old_spec.template.clone();
    let mut new_template = new_spec.template.clone();
    if suspended && not_started {
        for template in [&mut old_template, &mut new_template] {
            if let Some(meta) = template.metadata.as_mut() {
                meta.labels = None;
                meta.annotations = None;
            }
            if let Some(pod) = template.spec.as_mut() {
                pod.node_selector = None;
                pod.tolerations = None;
                pod.scheduling_gates = None;
                if let Some(affinity) = pod.affinity.as_mut() {
                    affinity.node_affinity = None;
                    if affinity.pod_affinity.is_none() && affinity.pod_anti_affinity.is_none() {
                        pod.affinity = None;
                    }
                }
            }
        }
    }
    if !semantic_eq(&to_json(&old_template), &to_json(&new_template)) {
        c.push(
            "spec.template",
            "Invalid value: field is immutable",
            rules::VALIDATE_POD_TEMPLATE_UPDATE,
        );
    }
    c.out
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Checker {
    /// `ValidateObjectMetaUpdate` (the object is then validated as on create).
    fn object_meta_update(&mut self, old: &ObjectMeta, new: &ObjectMeta, path: &str) {
        // k8s.io/apimachinery/pkg/api/validation.ValidateObjectMetaAccessorUpdate. The
        // resourceVersion requirement is left out: Jobs allow unconditional updates and a
        // patch carries the stored one.
        let r = rules::VALIDATE_OBJECT_META_UPDATE;
        if old.deletion_timestamp.is_some() {
            let old_finalizers: BTreeSet<&String> = old.finalizers.iter().flatten().collect();
            if new
                .finalizers
                .iter()
                .flatten()
                .any(|f| !old_finalizers.contains(f))
            {
                self.push(
                    child(path, "finalizers"),
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                    r,
                );
            }
        }
        if new.generation.unwrap_or(0) < old.generation.unwrap_or(0) {
            self.push(
                child(path, "generation"),
                format!(
                    "Invalid value: {:?}: must not be decremented",
                    new.generation
                ),
                r,
            );
        }
        for (field, old_value, new_value) in [
            ("name", to_json(&old.name), to_json(&new.name)),
            (
                "namespace",
                to_json(&old.namespace),
                to_json(&new.namespace),
            ),
            ("uid", to_json(&old.uid), to_json(&new.uid)),
            (
                "creationTimestamp",
                to_json(&old.creation_timestamp),
                to_json(&new.creation_timestamp),
            ),
            (
                "deletionTimestamp",
                to_json(&old.deletion_timestamp),
                to_json(&new.deletion_timestamp),
            ),
            (
                "deletionGracePeriodSeconds",
                to_json(&old.deletion_grace_period_seconds),
                to_json(&new.deletion_grace_period_seconds),
            ),
        ] {
            let empty = |v: &Value| v.is_null() || v.as_str() == Some("");
            if !(empty(&old_value) && empty(&new_value)) && old_value != new_value {
                self.push(
                    child(path, field),
                    format!("Invalid value: {new_value}: field is immutable"),
                    rules::VALIDATE_IMMUTABLE_FIELD,
                );
            }
        }
    }
}

/// Keys whose JSON objects are Go maps or non-pointer structs: absent and empty are equal.
const EMPTY_IS_ABSENT: [&str; 9] = [
    "labels",
    "annotations",
    "nodeSelector",
    "limits",
    "requests",
    "overhead",
    "metadata",
    "resources",
    "matchLabels",
];
/// Keys whose JSON objects map names to quantities.
const QUANTITY_MAPS: [&str; 3] = ["limits", "requests", "overhead"];

/// `apiequality.Semantic.DeepEqual` on serialised objects: nil and empty slices and maps are
/// equal, quantities compare with `Cmp`.
fn semantic_eq(a: &Value, b: &Value) -> bool {
    normalize(a, None, false) == normalize(b, None, false)
}

fn normalize(value: &Value, key: Option<&str>, quantity: bool) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::String(s) if quantity || key == Some("sizeLimit") => Some(Value::String(
            parse_quantity(s)
                .map(|q| q.canonical())
                .unwrap_or_else(|_| s.clone()),
        )),
        Value::Array(items) => {
            let items: Vec<Value> = items
                .iter()
                .map(|item| normalize(item, None, false).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(map) => {
            let holds_quantities = key.is_some_and(|k| QUANTITY_MAPS.contains(&k));
            let map: serde_json::Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| {
                    normalize(v, Some(k), holds_quantities).map(|v| (k.clone(), v))
                })
                .collect();
            if map.is_empty() && key.is_some_and(|k| EMPTY_IS_ABSENT.contains(&k)) {
                None
            } else {
                Some(Value::Object(map))
            }
        }
        other => Some(other.clone()),
    }
}

// ----------------------------------------------------------------------------------------
// Events: k8s.io/kubernetes/pkg/apis/core/validation/events.go
// ----------------------------------------------------------------------------------------

// k8s.io/kubernetes/pkg/apis/core/validation: ReportingInstanceLengthLimit,
// ActionLengthLimit, ReasonLengthLimit, NoteLengthLimit (len() of a Go string: bytes).
const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which an unset timestamp decodes to.
fn is_zero_time(ts: &k8s_openapi::jiff::Timestamp) -> bool {
    ts.as_second() == -62_135_596_800 && ts.subsec_nanosecond() == 0
}

/// What `ValidateEventCreate` (k8s.io/kubernetes/pkg/apis/core/validation) refuses for an
/// Event created through events.k8s.io/v1 (strict validation, on top of the legacy rules).
///
/// `regarding` becomes `involvedObject`, `note` `message`, the `deprecated*` fields the core
/// fields of the same names. An absent `metadata.namespace` is taken as `default`, where
/// kube's `Recorder` posts events about cluster-scoped objects.
pub fn check_event(event: &Event) -> Vec<Violation> {
    let mut c = Checker::default();
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let involved_namespace = event
        .regarding
        .as_ref()
        .and_then(|r| r.namespace.as_deref())
        .unwrap_or_default();
    let event_time_zero = event.event_time.as_ref().is_none_or(|t| is_zero_time(&t.0));

    // legacyValidateEvent
    let legacy = rules::LEGACY_VALIDATE_EVENT;
    if event_time_zero {
        if involved_namespace.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                c.push(
                    "involvedObject.namespace",
                    format!(
                        "Invalid value: {involved_namespace:?}: does not match event.namespace"
                    ),
                    legacy,
                );
            }
        } else if namespace != involved_namespace {
            c.push(
                "involvedObject.namespace",
                format!("Invalid value: {involved_namespace:?}: does not match event.namespace"),
                legacy,
            );
        }
    } else {
        if involved_namespace.is_empty() && namespace != "default" && namespace != "kube-system" {
            c.push(
                "involvedObject.namespace",
                format!("Invalid value: {involved_namespace:?}: does not match event.namespace"),
                legacy,
            );
        }
        let reporting_controller = event.reporting_controller.as_deref().unwrap_or_default();
        if reporting_controller.is_empty() {
            c.push("reportingController", "Required value", legacy);
        }
        for msg in is_qualified_name(reporting_controller) {
            c.push(
                "reportingController",
                format!("Invalid value: {reporting_controller:?}: {msg}"),
                legacy,
            );
        }
        let reporting_instance = event.reporting_instance.as_deref().unwrap_or_default();
        c.required_within(
            "reportingInstance",
            reporting_instance,
            REPORTING_INSTANCE_LENGTH_LIMIT,
            legacy,
        );
        let action = event.action.as_deref().unwrap_or_default();
        c.required_within("action", action, ACTION_LENGTH_LIMIT, legacy);
        let reason = event.reason.as_deref().unwrap_or_default();
        c.required_within("reason", reason, REASON_LENGTH_LIMIT, legacy);
        let note = event.note.as_deref().unwrap_or_default();
        if note.len() > NOTE_LENGTH_LIMIT {
            c.push(
                "message",
                format!(
                    "Invalid value: \"\": can have at most {NOTE_LENGTH_LIMIT} characters (the \
                     note has {} bytes)",
                    note.len()
                ),
                legacy,
            );
        }
    }
    for msg in is_dns1123_subdomain(namespace) {
        c.push(
            "namespace",
            format!("Invalid value: {namespace:?}: {msg}"),
            legacy,
        );
    }

    // Strict validation for events.k8s.io/v1 (ValidateEventCreate).
    let strict = rules::VALIDATE_EVENT_CREATE;
    let mut meta = event.metadata.clone();
    meta.namespace = Some(namespace.to_string());
    c.object_meta(&meta, "metadata");
    // validateV1EventSeries
    if let Some(series) = &event.series {
        if series.count < 2 {
            c.push(
                "series.count",
                "Invalid value: \"\": should be at least 2",
                rules::VALIDATE_V1_EVENT_SERIES,
            );
        }
        if is_zero_time(&series.last_observed_time.0) {
            c.push(
                "series.lastObservedTime",
                "Required value",
                rules::VALIDATE_V1_EVENT_SERIES,
            );
        }
    }
    if event_time_zero {
        c.push("eventTime", "Required value", strict);
    }
    let type_ = event.type_.as_deref().unwrap_or_default();
    if type_ != "Normal" && type_ != "Warning" {
        c.push(
            "type",
            format!("Invalid value: \"\": has invalid value: {type_}"),
            strict,
        );
    }
    if event
        .deprecated_first_timestamp
        .as_ref()
        .is_some_and(|t| !is_zero_time(&t.0))
    {
        c.push(
            "firstTimestamp",
            "Invalid value: \"\": needs to be unset",
            strict,
        );
    }
    if event
        .deprecated_last_timestamp
        .as_ref()
        .is_some_and(|t| !is_zero_time(&t.0))
    {
        c.push(
            "lastTimestamp",
            "Invalid value: \"\": needs to be unset",
            strict,
        );
    }
    if event.deprecated_count.unwrap_or(0) != 0 {
        c.push("count", "Invalid value: \"\": needs to be unset", strict);
    }
    if event.deprecated_source.as_ref().is_some_and(|source| {
        !source.component.as_deref().unwrap_or_default().is_empty()
            || !source.host.as_deref().unwrap_or_default().is_empty()
    }) {
        c.push("source", "Invalid value: \"\": needs to be unset", strict);
    }
    c.out
}

// ----------------------------------------------------------------------------------------
// Conditions: k8s.io/apimachinery/pkg/apis/meta/v1/validation
// ----------------------------------------------------------------------------------------

// k8s.io/apimachinery/pkg/apis/meta/v1/validation: maxReasonLen, maxMessageLen.
const MAX_REASON_LEN: usize = 1024;
const MAX_MESSAGE_LEN: usize = 32 * 1024;

/// `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$` (conditionReasonFmt).
fn matches_condition_reason(s: &str) -> bool {
    let first = s.chars().next();
    let last = s.chars().next_back();
    match (first, last) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphabetic()
                && (last.is_ascii_alphanumeric() || last == '_')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        }
        _ => false,
    }
}

/// What `ValidateConditions` (k8s.io/apimachinery/pkg/apis/meta/v1/validation) refuses in a
/// `status.conditions` list: duplicate types, and per condition `ValidateCondition`.
pub fn check_conditions(conditions: &[Condition]) -> Vec<Violation> {
    let mut c = Checker::default();
    let path = "status.conditions";
    let mut seen = BTreeSet::new();
    for (i, condition) in conditions.iter().enumerate() {
        let at = index(path, i);
        if !seen.insert(condition.type_.as_str()) {
            c.push(
                child(&at, "type"),
                format!("Duplicate value: {:?}", condition.type_),
                rules::VALIDATE_CONDITIONS,
            );
        }
        // ValidateCondition
        let r = rules::VALIDATE_CONDITION;
        for msg in is_qualified_name(&condition.type_) {
            c.push(
                child(&at, "type"),
                format!("Invalid value: {:?}: {msg}", condition.type_),
                r,
            );
        }
        if !["True", "False", "Unknown"].contains(&condition.status.as_str()) {
            c.push(
                child(&at, "status"),
                format!(
                    "Unsupported value: {:?}: supported values: \"False\", \"True\", \"Unknown\"",
                    condition.status
                ),
                r,
            );
        }
        if let Some(generation) = condition.observed_generation.filter(|&g| g < 0) {
            c.push(
                child(&at, "observedGeneration"),
                format!("Invalid value: {generation}: must be greater than or equal to zero"),
                r,
            );
        }
        if is_zero_time(&condition.last_transition_time.0) {
            c.push(
                child(&at, "lastTransitionTime"),
                "Required value: must be set",
                r,
            );
        }
        if condition.reason.is_empty() {
            c.push(child(&at, "reason"), "Required value: must be set", r);
        } else {
            if !matches_condition_reason(&condition.reason) {
                c.push(
                    child(&at, "reason"),
                    format!(
                        "Invalid value: {:?}: a condition reason must start with alphabetic \
                         character, optionally followed by a string of alphanumeric characters \
                         or '_,:', and must end with an alphanumeric character or '_' (regex \
                         used for validation is '[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?')",
                        condition.reason
                    ),
                    r,
                );
            }
            if condition.reason.len() > MAX_REASON_LEN {
                c.push(
                    child(&at, "reason"),
                    format!("Too long: may not be more than {MAX_REASON_LEN} bytes"),
                    r,
                );
            }
        }
        if condition.message.len() > MAX_MESSAGE_LEN {
            c.push(
                child(&at, "message"),
                format!("Too long: may not be more than {MAX_MESSAGE_LEN} bytes"),
                r,
            );
        }
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels_follow_the_upstream_regex_and_length() {
        for ok in ["a", "abc", "a-1", "1-a", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", "é", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad).is_empty(), "{bad}");
        }
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
    }

    #[test]
    fn dns1123_subdomains_allow_dots_up_to_253_characters() {
        let long_label = "a".repeat(100);
        for ok in ["a", "a.b", "example.com", "1.2.3.4", long_label.as_str()] {
            assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        let too_long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(too_long.len(), 253);
        assert!(is_dns1123_subdomain(&too_long).is_empty());
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "A.b",
            "a_b",
            &format!("{too_long}c"),
        ] {
            assert!(!is_dns1123_subdomain(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_take_an_optional_subdomain_prefix() {
        // From TestValidateLabels (k8s.io/apimachinery/pkg/apis/meta/v1/validation).
        for ok in [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now.with.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "UpperCaseAreOK123",
            "fruitpipe.dev/pipeline",
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        for bad in [
            "nospecialchars^=@",
            "cantendwithadash-",
            "only/one/slash",
            "",
            "/name",
            "prefix/",
            "Upper.Case/name",
            &"a".repeat(64),
        ] {
            assert!(!is_qualified_name(bad).is_empty(), "{bad}");
        }
        assert!(is_qualified_name(&format!("{}/a", "a".repeat(253))).is_empty());
        assert!(!is_qualified_name(&format!("{}/a", "a".repeat(254))).is_empty());
    }

    #[test]
    fn label_values_are_empty_or_63_characters_of_the_alphabet() {
        for ok in ["", "bar", "123_-.BaR", &"a".repeat(63)] {
            assert!(is_valid_label_value(ok).is_empty(), "{ok}");
        }
        // labelValueErrorCases in TestValidateLabels.
        for bad in [
            &"a".repeat(64) as &str,
            "some\\bad\\value",
            "bad,value",
            "?#$notsogood",
            "-a",
            "a_",
            "é",
        ] {
            assert!(!is_valid_label_value(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn env_var_names_strict_and_relaxed() {
        for ok in ["A", "my.env-name", "MY_ENV.NAME", "MyEnvName1", "_x", "-x"] {
            assert!(is_env_var_name(ok).is_empty(), "{ok}");
            assert!(is_relaxed_env_var_name(ok).is_empty(), "{ok}");
        }
        for bad in ["", "1A", "A B", "A=B", ".", "..", "..a", "é"] {
            assert!(!is_env_var_name(bad).is_empty(), "{bad}");
        }
        // Relaxed: printable ASCII but '='.
        for ok in ["1A", "A B", "a:b", "~", "..a"] {
            assert!(is_relaxed_env_var_name(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A=B", "é", "tab\there", "new\nline"] {
            assert!(!is_relaxed_env_var_name(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn config_map_keys() {
        for ok in [
            "key.name",
            "KEY_NAME",
            "key-name",
            "AWS_ACCESS_KEY_ID",
            ".a",
        ] {
            assert!(is_config_map_key(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".", "..", "..a", "a/b", "a b", &"a".repeat(254)] {
            assert!(!is_config_map_key(bad).is_empty(), "{bad}");
        }
    }

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap_or_else(|err| panic!("{s}: {err}"))
    }

    #[test]
    fn quantities_parse_like_resource_parse_quantity() {
        for ok in [
            "0", "1", "1.5", "500m", "1Gi", "1Ki", "100M", "1e3", "1E3", "1e-3", "+1", "-1",
            "0.1n", "1.", ".5", "5Ei", "12e6", " 1Gi ", "1k", "100Mi", "250u", "2n",
            // parseQuantityString takes a missing number as 0, so these parse (as zero).
            "Gi", "e5", "-",
        ] {
            assert!(parse_quantity(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", " ", "abc", "1GB", "1K", "1ki", "1Gb", "1.2.3", "1 Gi", "1e", "1e+", "--1", "1m1",
            "e-20",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1Gi").cmp(&q("1073741824")), Ordering::Equal);
        assert_eq!(q("1").cmp(&q("1000m")), Ordering::Equal);
        assert_eq!(q("1e3").cmp(&q("1k")), Ordering::Equal);
        assert!(q("1Gi") > q("1G"));
        assert!(q("500m") < q("1"));
        assert!(q("2") > q("1999m"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert!(!q("-0").is_negative());
        assert!(q("-1m").is_negative());
        // Rounded up to nano units: 0.1n is 1n.
        assert_eq!(q("0.1n"), q("1n"));
        // BinarySI is capped at 2^63-1.
        assert_eq!(q("9000000Ei"), q("9223372036854775807"));
        assert!(q("1e100") > q("9000000Ei"));
    }

    #[test]
    fn integer_quantities() {
        assert!(q("2").is_whole());
        assert!(q("2000m").is_whole());
        assert!(!q("1500m").is_whole());
        assert!(!q("1n").is_whole());
        assert!(q("0").is_whole());
    }

    #[test]
    fn condition_reasons() {
        for ok in [
            "A",
            "MyName",
            "my_name",
            "ReasonA,ReasonB",
            "ReasonA:ReasonB",
            "A_",
        ] {
            assert!(matches_condition_reason(ok), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "_A",
            "Has space",
            "invalid;val",
            "valid,val:",
            "A-B",
        ] {
            assert!(!matches_condition_reason(bad), "{bad}");
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": { "a": "b" },
            "matchExpressions": [
                { "key": "a", "operator": "In", "values": ["b", "c"] },
                { "key": "x", "operator": "DoesNotExist" }
            ]
        }))
        .unwrap();
        assert!(selector_matches(&selector, &labels));
        let other = BTreeMap::from([("a".to_string(), "c".to_string())]);
        assert!(!selector_matches(&selector, &other));
    }

    #[test]
    fn semantic_equality_ignores_empty_lists_and_compares_quantities() {
        let a = serde_json::json!({ "resources": { "requests": { "memory": "1Gi" } }, "env": [] });
        let b = serde_json::json!({ "resources": { "requests": { "memory": "1073741824" } } });
        assert!(semantic_eq(&a, &b));
        let c = serde_json::json!({ "resources": { "requests": { "memory": "2Gi" } } });
        assert!(!semantic_eq(&a, &c));
        // An emptyDir {} is a pointer to an empty struct: not the same as no emptyDir.
        let d = serde_json::json!({ "emptyDir": {} });
        let e = serde_json::json!({});
        assert!(!semantic_eq(&d, &e));
    }

    #[test]
    fn violations_print_field_message_and_rule() {
        let v = Violation {
            field: "metadata.name".into(),
            message: "Required value".into(),
            rule: rules::VALIDATE_OBJECT_META,
        };
        assert_eq!(
            v.to_string(),
            "metadata.name: Required value (k8s.io/apimachinery/pkg/api/validation.ValidateObjectMetaAccessor)"
        );
    }
}
