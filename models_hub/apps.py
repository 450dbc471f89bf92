from django.apps import AppConfig


class ModelsHubConfig(AppConfig):
    name = "models_hub"
    default_auto_field = "django.db.models.BigAutoField"
