"""The playground's static files (index.html, ES modules, CSS), served by ``chorus.server.routes.playground``."""
