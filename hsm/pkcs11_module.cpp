#include "hsm/pkcs11_module.hpp"

#include <dlfcn.h>

#include "hsm/signing_service.hpp"

namespace portcullis::hsm {

Pkcs11Module::Pkcs11Module(const std::string& path) : path_(path) {
    library_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library_ == nullptr)
        throw HsmError("PKCS#11 module " + path + ": cannot load (" + ::dlerror() + ")");
    auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(library_, "C_GetFunctionList"));
    if (get_list == nullptr || get_list(&functions_) != CKR_OK || functions_ == nullptr) {
        ::dlclose(library_);
        throw HsmError("PKCS#11 module " + path + ": no usable C_GetFunctionList");
    }
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    const CK_RV rv = functions_->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        ::dlclose(library_);
        throw HsmError("PKCS#11 module " + path + ": C_Initialize failed: " + ckr_name(rv));
    }
}

Pkcs11Module::~Pkcs11Module() {
    functions_->C_Finalize(nullptr);
    ::dlclose(library_);
}

std::string token_label_of(const CK_TOKEN_INFO& info) {
    std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
    const auto end = label.find_last_not_of(' ');
    return end == std::string::npos ? std::string() : label.substr(0, end + 1);
}

std::vector<std::string> Pkcs11Module::token_labels() const {
    std::vector<std::string> labels;
    CK_ULONG count = 0;
    if (functions_->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK) return labels;
    std::vector<CK_SLOT_ID> slots(count);
    if (functions_->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK) return labels;
    for (CK_ULONG i = 0; i < count; ++i) {
        CK_TOKEN_INFO info{};
        if (functions_->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
            (info.flags & CKF_TOKEN_INITIALIZED))
            labels.push_back(token_label_of(info));
    }
    return labels;
}

std::optional<CK_SLOT_ID> Pkcs11Module::find_token(const std::string& label) const {
    CK_ULONG count = 0;
    if (functions_->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK) return std::nullopt;
    std::vector<CK_SLOT_ID> slots(count);
    if (functions_->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK) return std::nullopt;
    for (CK_ULONG i = 0; i < count; ++i) {
        CK_TOKEN_INFO info{};
        if (functions_->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
            (info.flags & CKF_TOKEN_INITIALIZED) && token_label_of(info) == label)
            return slots[i];
    }
    return std::nullopt;
}

std::vector<unsigned char> read_attribute(const Pkcs11Module& module, CK_SESSION_HANDLE session,
                                          CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
    CK_ATTRIBUTE attribute{type, nullptr, 0};
    if (module->C_GetAttributeValue(session, object, &attribute, 1) != CKR_OK ||
        attribute.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return {};
    std::vector<unsigned char> value(attribute.ulValueLen);
    attribute.pValue = value.data();
    if (module->C_GetAttributeValue(session, object, &attribute, 1) != CKR_OK) return {};
    value.resize(attribute.ulValueLen);
    return value;
}

std::vector<CK_OBJECT_HANDLE> find_objects(const Pkcs11Module& module, CK_SESSION_HANDLE session,
                                           CK_OBJECT_CLASS object_class, const std::string& label,
                                           const std::vector<std::uint8_t>& id) {
    std::vector<CK_ATTRIBUTE> query;
    query.push_back({CKA_CLASS, &object_class, sizeof object_class});
    if (!label.empty()) query.push_back({CKA_LABEL, const_cast<char*>(label.data()), label.size()});
    if (!id.empty()) query.push_back({CKA_ID, const_cast<std::uint8_t*>(id.data()), id.size()});
    std::vector<CK_OBJECT_HANDLE> found;
    if (module->C_FindObjectsInit(session, query.data(), query.size()) != CKR_OK) return found;
    CK_OBJECT_HANDLE handles[16];
    CK_ULONG n = 0;
    while (module->C_FindObjects(session, handles, 16, &n) == CKR_OK && n > 0)
        found.insert(found.end(), handles, handles + n);
    module->C_FindObjectsFinal(session);
    return found;
}

}  // namespace portcullis::hsm
