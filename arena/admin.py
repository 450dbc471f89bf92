"""Staff views of the arena: battles, votes (with their exclusion), pair counts and ratings; all read-mostly."""

from __future__ import annotations

from django.contrib import admin

from arena.models import Battle, PairStats, Rating, Vote


@admin.register(Battle)
class BattleAdmin(admin.ModelAdmin):
    list_display = ["id", "mode", "status", "model_a", "model_b", "created_at", "ready_at"]
    list_filter = ["mode", "status"]
    list_select_related = ["model_a", "model_b"]
    raw_id_fields = ["prompt", "response_a", "response_b", "model_a", "model_b", "user"]
    readonly_fields = ["session_hash", "ip_hash", "created_at", "ready_at"]
    search_fields = ["=id", "session_hash"]


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ["id", "battle", "winner", "counted", "exclusion_reason", "created_at"]
    list_filter = ["counted", "exclusion_reason", "winner"]
    raw_id_fields = ["battle", "user", "item"]
    readonly_fields = ["session_hash", "ip_hash", "seconds_to_vote", "created_at"]
    search_fields = ["=battle__id", "session_hash"]


@admin.register(PairStats)
class PairStatsAdmin(admin.ModelAdmin):
    list_display = ["category", "model_lo", "model_hi", "wins_lo", "wins_hi", "ties", "both_bad"]
    list_filter = ["category"]
    list_select_related = ["model_lo", "model_hi"]
    # Counts move with every vote (F() updates); editing them here would race with votes.
    readonly_fields = ["category", "model_lo", "model_hi", "wins_lo", "wins_hi", "ties", "both_bad"]


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["category", "model", "rank_ub", "rating", "ci_low", "ci_high", "elo", "component"]
    list_filter = ["category"]
    list_select_related = ["model"]
    readonly_fields = [f.name for f in Rating._meta.fields]
