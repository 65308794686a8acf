//! Identifiers of the things the clinic records. Each is a UUID newtype so a patient id can
//! never be passed where an episode id is meant; each knows the name of its event stream.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps an existing UUID.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl $name {
            #[doc = concat!("The name of the event stream this id keys: `", $prefix, "-{uuid}`.")]
            #[must_use]
            pub fn stream_id(&self) -> String {
                format!(concat!($prefix, "-{}"), self.0)
            }

            #[doc = concat!("The id in a stream id of the form `", $prefix, "-{uuid}`; `None` for any other stream.")]
            #[must_use]
            pub fn from_stream_id(stream_id: &str) -> Option<Self> {
                let id = stream_id.strip_prefix(concat!($prefix, "-"))?;
                Uuid::parse_str(id).ok().map(Self)
            }
        }
    };
}

uuid_id!(
    /// A clinic: the tenant every stream and read model belongs to.
    ClinicId,
    "clinic"
);
uuid_id!(
    /// A patient; their identity lives in its own stream, apart from the clinical facts.
    PatientId,
    "patient"
);
uuid_id!(
    /// An episode of care: one patient's course at one clinic, evaluation to discharge.
    EpisodeId,
    "episode"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_prefixed_by_kind() {
        let uuid = Uuid::from_u128(7);
        assert_eq!(PatientId(uuid).stream_id(), format!("patient-{uuid}"));
        assert_eq!(EpisodeId(uuid).stream_id(), format!("episode-{uuid}"));
    }

    #[test]
    fn a_stream_id_gives_back_its_id_only_for_its_own_kind() {
        let episode = EpisodeId(Uuid::from_u128(7));
        assert_eq!(
            EpisodeId::from_stream_id(&episode.stream_id()),
            Some(episode)
        );
        assert_eq!(
            EpisodeId::from_stream_id(&PatientId(episode.0).stream_id()),
            None
        );
        assert_eq!(EpisodeId::from_stream_id("episode-not-a-uuid"), None);
    }

    #[test]
    fn ids_serialize_as_bare_uuids() {
        let uuid = Uuid::from_u128(9);
        let json = serde_json::to_value(EpisodeId(uuid)).unwrap();
        assert_eq!(json, serde_json::json!(uuid.to_string()));
        assert_eq!(EpisodeId(uuid).to_string(), uuid.to_string());
    }
}
