"""Running chorus on the engines people already operate: Ray Serve (chorus.deploy.ray_app)."""
