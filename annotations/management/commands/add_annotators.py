"""python manage.py add_annotators --campaign NAME USER..."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotations import services
from annotations.models import Campaign, MemberRole


class Command(BaseCommand):
    help = "Add users to a campaign as annotators (or managers with --role manager). All or nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name")
        parser.add_argument("--role", choices=MemberRole.values, default=MemberRole.ANNOTATOR)
        parser.add_argument("usernames", nargs="+", metavar="USER")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign named {options['campaign']!r}")
        users = {u.username: u for u in get_user_model().objects.filter(username__in=options["usernames"])}
        missing = [name for name in options["usernames"] if name not in users]
        if missing:
            raise CommandError(f"Unknown user(s): {', '.join(missing)}; nobody was added")
        with transaction.atomic():
            for name in options["usernames"]:
                services.membership_set(campaign=campaign, user=users[name], role=options["role"])
        self.stdout.write(self.style.SUCCESS(f"{len(users)} user(s) are now {options['role']}s of {campaign.name!r}"))
