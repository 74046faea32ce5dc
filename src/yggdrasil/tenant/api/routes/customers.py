from yggdrasil.tenant.api.routes.parties import make_party_router

router = make_party_router("customers", "customers", writer_role="sales", singular="customer")
