//! Presentational components: they render their props and hold no
//! request logic, so tests can render them with any state.

mod attach;
mod composer;
mod file_message;
mod header;
mod key_changed_banner;
mod lanes;
mod message_list;
mod metric_chart;
mod peer_check;
mod peer_list;
mod peer_path;
mod peer_trust;
mod room_list;
mod room_members;
mod search;
mod timeline;
mod training_name;

pub use attach::{AttachFiles, AttachFilesProps, FileDrop, FileDropProps};
pub use composer::{Composer, ComposerProps};
pub use file_message::{FileMessage, FileMessageProps, UploadMessage, UploadMessageProps};
pub use header::{Header, HeaderProps};
pub use key_changed_banner::{KeyChangedBanner, KeyChangedBannerProps};
pub use lanes::{Lanes, LanesProps};
pub use message_list::{MessageList, MessageListProps};
pub use metric_chart::{
    chart_geometry, ChartGeometry, MetricChart, MetricChartProps, MetricCharts, MetricChartsProps,
};
pub use peer_check::{PeerCheckPanel, PeerCheckPanelProps};
pub use peer_list::{PeerList, PeerListProps};
pub use peer_path::{PeerPathMark, PeerPathMarkProps};
pub use peer_trust::{PeerTrustMark, PeerTrustMarkProps};
pub use room_list::{members_words, NewRoomForm, NewRoomFormProps, RoomList, RoomListProps};
pub use room_members::{RoomMembers, RoomMembersProps};
pub use search::{marked, SearchBox, SearchQuery, SearchResults, SearchResultsProps};
pub use timeline::{Timeline, TimelineProps};
pub use training_name::{TrainingName, TrainingNameProps};

/// Minutes to add to UTC for the browser's local time.
pub fn local_offset_min() -> i64 {
    if cfg!(target_arch = "wasm32") {
        -(js_sys::Date::new_0().get_timezone_offset() as i64)
    } else {
        0
    }
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    if cfg!(target_arch = "wasm32") {
        js_sys::Date::now() as i64
    } else {
        0
    }
}
