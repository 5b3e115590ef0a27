from activity.cli import app

app(prog_name="activity")
