"""The one error shape every API route answers with: {"error": reason}."""

from fastapi.responses import JSONResponse


def error_response(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)
