"""What the map tells others: alert rules and alerts, the event stream (SSE), MQTT notifications, webhooks."""
