from google.colab import record


def enable_custom_widget_manager() -> None:
    record("output.enable_custom_widget_manager")
