"""REST API routes; the project includes them at ``api/presence/``."""

from django.urls import path

from presence import api, api_docs, beacon

app_name = "presence"

urlpatterns = [
    path("online/", api.OnlineView.as_view(), name="online"),
    path("rooms/", api.RoomRankingView.as_view(), name="rooms"),
    path("rooms/<str:room>/", api.RoomDetailView.as_view(), name="room"),
    path("token/", api.TokenView.as_view(), name="token"),
    path("beacon/", beacon.beacon, name="beacon"),
    path("history/", api.HistoryView.as_view(), name="history"),
    path("history/ranking/", api.ArticleRankingView.as_view(), name="article-ranking"),
    path("peaks/", api.PeaksView.as_view(), name="peaks"),
    path("schema/", api_docs.SchemaView.as_view(), name="schema"),
    path("docs/", api_docs.DocsView.as_view(), name="docs"),
]
