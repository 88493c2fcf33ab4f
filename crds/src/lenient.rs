//! [`Lenient`]: a kind that decodes every stored object, so one object the current types
//! reject (a protocol `SCTP` kept from before a CRD change narrowed the enum, or written
//! by a newer version before a rollback) does not fail the whole list or watch.
//!
//! A typed `Api<VirtualService>` list fails as a whole when one item does not decode; a
//! reflector over it never becomes ready, so a restarted agent would never program
//! anything and a new leader never arbitrate. Over `Api<Lenient<VirtualService>>` the same
//! object arrives as [`Lenient::Invalid`], with its metadata, the field that failed and
//! why; the operator marks it `Accepted=False InvalidSpec` and everything else goes on.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An object of kind `K` as stored: decoded, or the reason it does not decode.
#[derive(Clone, Debug)]
// Generic over K, so clippy sees a zero-sized `Valid`; both variants hold an object.
#[allow(clippy::large_enum_variant)]
pub enum Lenient<K> {
    Valid(K),
    Invalid(Invalid),
}

/// A stored object that `K`'s types reject.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    pub metadata: ObjectMeta,
    /// Where and why decoding failed, e.g. ``spec.protocol: unknown variant `SCTP`, expected `TCP` or `UDP` ``.
    pub error: String,
    /// Its status as stored (`null` when none), so that an unchanged verdict is not
    /// written again.
    pub status: Value,
}

impl Invalid {
    /// The conditions its status holds (those that decode).
    pub fn conditions(&self) -> Vec<Condition> {
        self.status["conditions"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| Condition::deserialize(c).ok()).collect())
            .unwrap_or_default()
    }
}

impl<K> Lenient<K> {
    /// The decoded object, if it decodes.
    pub fn valid(&self) -> Option<&K> {
        match self {
            Lenient::Valid(k) => Some(k),
            Lenient::Invalid(_) => None,
        }
    }

    /// Why it does not decode, if it does not.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            Lenient::Valid(_) => None,
            Lenient::Invalid(i) => Some(i),
        }
    }
}

impl<'de, K: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(k) => Ok(Lenient::Valid(k)),
            Err(e) => {
                let error = format!("{}: {}", e.path(), e.inner());
                // Without readable metadata there is no object to report on: fail as before.
                let metadata = ObjectMeta::deserialize(&value["metadata"]).map_err(serde::de::Error::custom)?;
                let status = value["status"].clone();
                Ok(Lenient::Invalid(Invalid { metadata, error, status }))
            }
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta(),
            Lenient::Invalid(i) => &i.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta_mut(),
            Lenient::Invalid(i) => &mut i.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::v1alpha1::VirtualService;

    #[test]
    fn an_unknown_enum_value_is_kept_as_invalid_with_its_field() {
        let list: Vec<Lenient<VirtualService>> = serde_json::from_value(json!([
            {"apiVersion": "lb.weir.dev/v1alpha1", "kind": "VirtualService",
             "metadata": {"name": "ok", "namespace": "default"},
             "spec": {"address": "10.0.0.1", "port": 80, "protocol": "TCP"}},
            {"apiVersion": "lb.weir.dev/v1alpha1", "kind": "VirtualService",
             "metadata": {"name": "sctp", "namespace": "default", "generation": 2},
             "spec": {"address": "10.0.0.2", "port": 80, "protocol": "SCTP"},
             "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                        "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}},
        ]))
        .unwrap();
        assert_eq!(list[0].valid().unwrap().spec.address, "10.0.0.1");
        let bad = list[1].invalid().unwrap();
        assert_eq!(bad.error, "spec.protocol: unknown variant `SCTP`, expected `TCP` or `UDP`");
        assert_eq!((bad.metadata.name.as_deref(), bad.metadata.generation), (Some("sctp"), Some(2)));
        assert_eq!(bad.conditions().len(), 1);
        assert_eq!(list[1].meta().name.as_deref(), Some("sctp"));
        assert_eq!(Lenient::<VirtualService>::plural(&()), "virtualservices");
    }
}
