/*
 * A PKCS#11 module for the fault tests: it forwards every call to SoftHSM, except that
 * C_SignInit and C_Sign return the CK_RV written (in hex) in the file named by
 * HSM_EST_FAULT_FILE, for as long as that file exists. It stands for an HSM whose module
 * starts failing under a running signer.
 *
 *   cc -shared -fPIC -o fault.so pkcs11_fault.c -ldl
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long CK_RV;
typedef unsigned long CK_ULONG;
typedef void (*any_fn)(void); /* any function; cast back before calling */

/* CK_FUNCTION_LIST of PKCS#11 2.40: a CK_VERSION (padded to a pointer's alignment), then
 * 68 function pointers in the standard's order. C_SignInit is the 43rd, C_Sign the 44th. */
#define FUNCTIONS 68
#define SIGN_INIT 42
#define SIGN 43
struct function_list {
    unsigned char version[2];
    any_fn f[FUNCTIONS];
};

typedef CK_RV (*sign_init_fn)(CK_ULONG, void *, CK_ULONG);
typedef CK_RV (*sign_fn)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*get_list_fn)(struct function_list **);

static struct function_list *real;
static struct function_list faulty;

/* The CK_RV to inject now, or 0. */
static CK_RV injected(void) {
    const char *path = getenv("HSM_EST_FAULT_FILE");
    if (path == NULL)
        return 0;
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return 0;
    unsigned long rv = 0;
    if (fscanf(file, "%lx", &rv) != 1 || rv == 0)
        rv = 0x30; /* CKR_DEVICE_ERROR */
    fclose(file);
    return rv;
}

static CK_RV sign_init(CK_ULONG session, void *mechanism, CK_ULONG key) {
    CK_RV rv = injected();
    return rv ? rv : ((sign_init_fn)real->f[SIGN_INIT])(session, mechanism, key);
}

static CK_RV sign(CK_ULONG session, unsigned char *data, CK_ULONG len, unsigned char *sig,
                  CK_ULONG *sig_len) {
    CK_RV rv = injected();
    return rv ? rv : ((sign_fn)real->f[SIGN])(session, data, len, sig, sig_len);
}

CK_RV C_GetFunctionList(struct function_list **out) {
    if (out == NULL)
        return 0x7; /* CKR_ARGUMENTS_BAD */
    if (real == NULL) {
        const char *path = getenv("HSM_EST_REAL_MODULE");
        void *lib = dlopen(path ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL)
            return 0x5; /* CKR_GENERAL_ERROR */
        get_list_fn get = (get_list_fn)dlsym(lib, "C_GetFunctionList");
        if (get == NULL)
            return 0x5;
        CK_RV rv = get(&real);
        if (rv != 0)
            return rv;
        memcpy(&faulty, real, sizeof faulty);
        faulty.f[SIGN_INIT] = (any_fn)sign_init;
        faulty.f[SIGN] = (any_fn)sign;
    }
    *out = &faulty;
    return 0;
}
