from yggdrasil.tenant.api.routes.parties import make_party_router

router = make_party_router("suppliers", "suppliers", writer_role="purchasing", singular="supplier")
