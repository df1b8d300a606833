from django.urls import path

from . import anthropic_compat, openai_compat, schema, views

urlpatterns = [
    path("api/v1/route", views.route_api, name="api-route"),
    path("api/v1/complete", views.complete_api, name="api-complete"),
    path("api/v1/feedback", views.feedback_api, name="api-feedback"),
    path("api/v1/stats/cache", views.cache_stats_api, name="api-cache-stats"),
    path("v1/chat/completions", openai_compat.chat_completions_api, name="openai-chat-completions"),
    path("v1/messages", anthropic_compat.messages_api, name="anthropic-messages"),
    path("api/schema/", schema.schema_view, name="api-schema"),
    path("api/docs/", schema.docs_view, name="api-docs"),
]
